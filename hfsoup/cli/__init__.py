"""The `hfsoup` command line: one module per verb, each with `add(verbs)` and its `run(args)`; errors are formatted for
people in one place (`errors.format_error`).

Verbs: soup, check, find, eval, push, validate and cook (recipe), finetune, hub serve, demo. Only light modules are
imported to build the parser: `hfsoup --help` and `--version` must not pay for importing torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from .. import __version__, distributed, scrub
from ..constants import debug
from ..errors import HfsoupError
from . import check, demo, find, finetune, hub, push, recipe, soup
from . import eval as eval_
from .errors import format_error

logger = logging.getLogger("hfsoup")

VERBS = (soup, check, find, eval_, push, recipe, finetune, hub, demo)

MAIN_EPILOG = """\
examples:
  hfsoup demo                                   # offline, end to end, on real MiniLM fine-tunes
  hfsoup demo --fast                            # seconds: only the souping, of tiny models (no training, push)
  hfsoup soup org/ft-a org/ft-b@main ./ft-c -o soup/
  hfsoup push soup/ me/my-soup                  # one commit, with a model card
  hfsoup cook recipes/glue-bert-base-mrpc.yaml  # a recipe: soup, scores, card, push
  hfsoup hub serve --root ./hub-store           # a local Hub for air-gapped teams

Set HFSOUP_DEBUG=1 to see tracebacks.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hfsoup",
        description="Average fine-tuned Hugging Face models into a model soup (Wortsman et al., 2022).",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hfsoup {__version__}")
    _add_verbosity(parser, default=0)
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb in VERBS:
        verb.add(verbs)
    _verbosity_everywhere(verbs)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, default: object) -> None:
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=default, help="more output (-vv for debug)")
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if default == 0 else default,
        help="errors only, no progress bars",
    )


def _verbosity_everywhere(verbs: argparse._SubParsersAction) -> None:
    """`-v`/`-q` after the verb too (`hfsoup soup -v ...`), as people type them. A verb's copy has no default, so
    `hfsoup -q soup ...` keeps the `-q` given before the verb instead of having it reset by the verb's parser."""
    seen: set[int] = set()
    for sub in verbs.choices.values():
        if id(sub) in seen:  # an alias names the same parser
            continue
        seen.add(id(sub))
        _add_verbosity(sub, default=argparse.SUPPRESS)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):  # `hfsoup hub serve -v`
                _verbosity_everywhere(action)


def _configure_logging(args: argparse.Namespace) -> logging.Handler:
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    scrub.remember(getattr(args, "token", None))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(scrub.ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
    quiet = args.quiet
    if distributed.launched_rank() != 0:  # under torchrun: the main process tells the story, each its own share
        handler.addFilter(distributed.OnlyMainInfo())
        quiet = True
        # datasets reads this when it is imported (later, by the verb), as it draws bars of its own
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logger.addHandler(handler)
    logger.setLevel(level)
    # Python warnings (from hfsoup or the libraries) go through the same scrubbing handler, not straight to stderr.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)
    if quiet:  # one set of progress bars: the main process's
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return handler


def _restore_logging(handler: logging.Handler, level: int) -> None:
    """Undo `_configure_logging`: main() may be called again in the same process (tests, notebooks)."""
    logger.removeHandler(handler)
    logger.setLevel(level)
    logging.getLogger("py.warnings").removeHandler(handler)
    logging.captureWarnings(False)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, a scheduler ending a job), raised in the main thread as Ctrl-C is, so that the same
    cleanup runs: the shard being written is discarded, never recorded as complete, and nothing is moved into place."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _on_sigterm_raise():  # noqa: ANN202 - the previous handler, to restore (None when none was installed)
    """Handle SIGTERM like SIGINT while a command runs; only the main thread can (main() may run in another)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logger.level
    handler = _configure_logging(args)
    previous = _on_sigterm_raise()
    try:
        return args.func(args)
    except _Terminated:
        print("Terminated (SIGTERM); nothing was moved into place.", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("Interrupted; nothing was moved into place.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the single place errors reach a person
        if debug():  # the traceback, scrubbed: chained exceptions may quote a server that echoed the token
            print(scrub.scrub("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
            return exc.exit_code if isinstance(exc, HfsoupError) else 1
        print(format_error(exc), file=sys.stderr)
        return exc.exit_code if isinstance(exc, HfsoupError) else 1
    finally:
        _restore_logging(handler, level)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["build_parser", "format_error", "main"]
