"""``lensllm card``: show, write and push the scaling-law fits of model cards.

    lensllm card show REPO_OR_DIR [--json]
    lensllm card write MODEL_DIR --from FIT.json [--model MODEL_ID] --dataset D [--config C] [--split S]
    lensllm card push REPO_ID --from FIT.json [--model MODEL_ID] --dataset D [...] [--pr]

FIT.json is what ``lensllm fit --json`` and the selector write. The token comes from
``HF_TOKEN`` or ``hf auth login``, never from the command line (it would land in the shell
history); the Hub address from ``HF_ENDPOINT``.
"""

from __future__ import annotations

import argparse
import json

from .._utils import display
from ..errors import LensLLMError
from ..engine.ranking import Ranking

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("card", help="show, write or push the fits in model cards",
                                   description="Scaling-law fits in Hugging Face model cards (the 'lensllm' metadata).")
    actions = parser.add_subparsers(dest="card_action", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="list the fits of a Hub repo or a local model folder")
    show.add_argument("source", metavar="REPO_OR_DIR", help="Hub repo ID, model folder or README.md")
    show.add_argument("--json", action="store_true", help="print the fits as JSON")

    write = actions.add_parser("write", help="write fits into a local model folder's README.md")
    write.add_argument("target", metavar="MODEL_DIR", help="Trainer output_dir or save_pretrained folder")
    _add_fit_options(write)

    push = actions.add_parser("push", help="publish fits in a Hub repo's model card")
    push.add_argument("target", metavar="REPO_ID", help="the model repo, namespace/name")
    _add_fit_options(push)
    push.add_argument("--pr", action="store_true", default=None,
                      help="open a pull request (default: commit to your own repos, a pull request elsewhere)")

    parser.set_defaults(run=run)


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="fit_json", metavar="FIT.json", required=True,
                        help="the ranking JSON of 'lensllm fit --json' or the selector")
    parser.add_argument("--model", metavar="MODEL_ID",
                        help="which candidate of the ranking (default: the repo ID when pushing, or the only one)")
    parser.add_argument("--dataset", required=True, help="Hub dataset ID (or a short description) of the losses")
    parser.add_argument("--config", help="dataset configuration")
    parser.add_argument("--split", help="dataset split the losses were measured on")
    parser.add_argument("--metric", default="eval_loss", help="the metric of the losses (default: eval_loss)")
    parser.add_argument("--adapter", help="the adapter fine-tuned, e.g. 'lora r=8' (default: none)")


def run(args: argparse.Namespace) -> int:
    from .. import hub_cards  # huggingface_hub loads on use, not for 'lensllm --help'

    if args.card_action == "show":
        fits = hub_cards.load_fits(args.source)
        if args.json:
            print(json.dumps([fit.to_dict() for fit in fits], indent=2))
        else:
            print(_describe(args.source, fits))
        return 0

    ranking = Ranking.read_json(args.fit_json)
    model = _choose_model(ranking, args.model, args.target if args.card_action == "push" else None)
    fits = hub_cards.fits_from_ranking(ranking, model, dataset=args.dataset, config=args.config, split=args.split,
                                       metric=args.metric, adapter=args.adapter)
    if args.card_action == "write":
        path = hub_cards.write_card(args.target, fits)
        print(f"wrote the {args.dataset} fit of {model} into {path}")
    else:
        commit = hub_cards.push_fits(args.target, fits, create_pr=args.pr)
        if commit.pr_url:
            print(f"opened a pull request on {args.target} with the {args.dataset} fit of {model}: {commit.pr_url}")
        else:
            print(f"pushed the {args.dataset} fit of {model} to {args.target}: {commit.commit_url}")
    return 0


def _choose_model(ranking: Ranking, model: str | None, repo_id: str | None) -> str:
    """``--model``, else the repo ID when the ranking has it, else the ranking's only candidate."""
    names = [c.model for c in ranking.candidates]
    if model is not None:
        return model
    if repo_id in names:
        return repo_id
    if len(names) == 1:
        return names[0]
    raise LensLLMError(f"the ranking has {len(names)} candidates ({', '.join(names) or 'none'}); "
                       "say which with --model")


def _describe(source: str, fits: list) -> str:
    """The fits as text; every name comes from a card we do not control, so it is shown escaped."""
    source = display(source)
    if not fits:
        return f"{source}: no lensllm fits in its model card"
    lines = [f"{source}: {len(fits)} fit{'s' if len(fits) != 1 else ''}"]
    for fit in fits:
        data = ", ".join(display(x) for x in (fit.dataset_config, fit.dataset_split) if x)
        on = f"{display(fit.dataset)} ({data})" if data else display(fit.dataset)
        adapter = f" with adapter {display(fit.adapter)}" if fit.adapter else ""
        sizes, used = fit.fit.sizes, sum(fit.fit.used)
        head = (f"  {display(fit.model or '?')} on {on}, {display(fit.metric)}{adapter}: {fit.law} law, "
                f"{used} of {len(sizes)} points used")
        if sizes:
            head += f", up to {max(sizes):,.0f} examples"
        lines.append(head)
        if fit.target_size is not None:
            low, high = fit.interval
            lines.append(f"    predicted {display(fit.metric)} at {fit.target_size:,.0f} examples: "
                         f"{fit.predicted_loss:.4g}, {fit.level:.0%} interval [{low:.4g}, {high:.4g}]")
        lines.extend(f"    warning: {display(w)}" for w in fit.fit.warnings)
        transition = f"fitted from {fit.fit.transition_size:,.0f}; " if fit.fit.transition_size else ""
        lines.append(f"    {transition}lensllm_hf {display(fit.library_version)}, {display(fit.date)}")
    return "\n".join(lines)
