"""Run records: one JSON document per fine-tuning run, and stores that many processes share.

A record is what :class:`~lensllm_hf.LensLLMCallback` writes and what the scaling-law engine
reads: the model, the subset size D, every evaluation, the final eval loss, the FLOPs spent and
the NTK probe. Its identity is a :class:`RunKey` (model exactly as given,
revision, adapter, config hash, subset size, seed), from which the file name is derived
injectively. A :class:`Store` is a folder or any fsspec URL (``s3://...``, ``gs://...``) where
runs from many machines meet: runs are claimed before they train, writes are atomic and never
replace a complete record with an unfinished one, and anything odd in a store is reported with
a :class:`RecordWarning` instead of silently changing a ranking (docs/store.md).

Example:
    >>> from lensllm_hf import records
    >>> store = records.Store("runs/")
    >>> key = records.RunKey("gpt2", 800, seed=0, config_hash="3f2a9c01d4")
    >>> claim = store.claim(key)                       # None: done, or another process runs it
    >>> records.write_record(record, store)            # runs/gpt2__D800__seed0__3f2a9c01d4__<hash>.lensllm.json
    >>> table = records.load_table("runs/")            # a CurveTable: model x subset size -> loss
"""

from ..errors import RecordError, RecordWarning, SchemaError
from .schema import (DEFAULT_RECORD_NAME, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, STATUSES, STORE_SUFFIX, Evaluation,
                     RunKey, RunRecord, adapter_hash, config_hash, legacy_record_name, record_name)
from .claims import CLAIMS_FOLDER, Claim
from .files import MAX_RECORD_BYTES
from .store import (Store, check_writable, has_record, list_records, load_records, read_record, record_path,
                    require_persistent, write_record)
from .table import load_table, table_rows

__all__ = [
    "CLAIMS_FOLDER",
    "DEFAULT_RECORD_NAME",
    "MAX_RECORD_BYTES",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "STORE_SUFFIX",
    "Claim",
    "Evaluation",
    "RecordError",
    "RecordWarning",
    "RunKey",
    "RunRecord",
    "SchemaError",
    "Store",
    "adapter_hash",
    "check_writable",
    "config_hash",
    "has_record",
    "legacy_record_name",
    "list_records",
    "load_records",
    "load_table",
    "read_record",
    "record_name",
    "record_path",
    "require_persistent",
    "table_rows",
    "write_record",
]
