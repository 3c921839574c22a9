"""The engine: curve tables, scaling laws, fits, selection methods, ranking, the buying loop
and its policies, and the replay protocol. numpy/scipy/pandas only (no torch), so it runs
anywhere a table does."""
