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


class _Lines(logging.StreamHandler):
    """Log lines to stderr that do not break a progress bar being drawn: written through tqdm when it is loaded
    (it clears the bar, prints the line, and redraws the bar below it)."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")
        if tqdm is None:
            super().emit(record)
            return
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise: the standard handler's own policy
            self.handleError(record)


class _Logging:
    """The CLI's output for one command, undone afterwards (`main` may run again in the same process: tests,
    notebooks): hfsoup's messages at the level -v/-q ask for, one plain line per pipeline stage unless -q, and the
    progress bars: hfsoup's own at the default verbosity, the libraries' too with -v (they are the steps inside a
    stage: transformers loading weights, datasets tokenizing), none with -q."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..progress import STAGE_LOGGER

        self.level = logger.level
        self.stages = logging.getLogger(STAGE_LOGGER)
        self.saved_stages = (self.stages.level, self.stages.propagate)
        level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
        scrub.remember(getattr(args, "token", None))
        self.handler = _Lines(sys.stderr)
        self.handler.setFormatter(scrub.ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
        self.stage_handler = _Lines(sys.stderr)
        self.stage_handler.setFormatter(scrub.ScrubbingFormatter("%(message)s"))
        quiet = args.quiet
        if distributed.launched_rank() != 0:  # under torchrun: the main process tells the story, each its own share
            self.handler.addFilter(distributed.OnlyMainInfo())
            quiet = True
        logger.addHandler(self.handler)
        logger.setLevel(level)
        self.stages.addHandler(self.stage_handler)
        self.stages.setLevel(logging.ERROR if quiet else logging.INFO)
        self.stages.propagate = False  # printed once, plainly, not again by the handler above with -v
        # Python warnings (from hfsoup or the libraries) go through the same scrubbing handler, not straight to stderr.
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").addHandler(self.handler)
        self.bars = _Bars("none" if quiet else "all" if args.verbose else "hfsoup")

    def restore(self) -> None:
        logger.removeHandler(self.handler)
        logger.setLevel(self.level)
        self.stages.removeHandler(self.stage_handler)
        self.stages.setLevel(self.saved_stages[0])
        self.stages.propagate = self.saved_stages[1]
        logging.getLogger("py.warnings").removeHandler(self.handler)
        logging.captureWarnings(False)
        self.bars.restore()


class _Bars:
    """Which progress bars draw: `all`, `hfsoup` (hfsoup's own group only) or `none`. The libraries read their
    switches when imported (datasets its environment variable, transformers huggingface_hub's global state), so
    both are set before the verb imports them, and set directly where a library is already loaded."""

    def __init__(self, which: str) -> None:
        from huggingface_hub.utils import tqdm as hub_tqdm

        self.states = sys.modules[hub_tqdm.__module__].progress_bar_states
        self.saved = dict(self.states)
        self.env = os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS")
        self.libraries = self._library_switches()
        self.which = which
        if which == "all":
            return
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        from ..progress import BARS

        if sys.modules[hub_tqdm.__module__].HF_HUB_DISABLE_PROGRESS_BARS is None:  # set, the variable decides
            disable_progress_bars()
            if which == "hfsoup":
                enable_progress_bars(BARS)
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        for _, disable, _ in self.libraries:
            disable()

    @staticmethod
    def _library_switches() -> list[tuple[bool, object, object]]:
        """(was it on, switch off, switch on) for each library already imported that keeps its own switch."""
        switches = []
        datasets = sys.modules.get("datasets")
        if datasets is not None and hasattr(datasets, "disable_progress_bars"):
            switches.append(
                (datasets.is_progress_bar_enabled(), datasets.disable_progress_bars, datasets.enable_progress_bars)
            )
        hf_logging = sys.modules.get("transformers.utils.logging")
        if hf_logging is not None:
            switches.append(
                (hf_logging.is_progress_bar_enabled(), hf_logging.disable_progress_bar, hf_logging.enable_progress_bar)
            )
        return switches

    def restore(self) -> None:
        self.states.clear()
        self.states.update(self.saved)
        if self.env is None:
            os.environ.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = self.env
        for was_on, _, enable in self.libraries:
            if was_on:
                enable()
        hf_logging = sys.modules.get("transformers.utils.logging")
        if (
            self.which != "all"
            and hf_logging is not None
            and not any(enable is hf_logging.enable_progress_bar for _, _, enable in self.libraries)
        ):  # transformers, first imported during the command, took our switch: given back (datasets cannot be: it
            # reads its environment variable once, and warns when told otherwise)
            hf_logging.enable_progress_bar()


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
    output = _Logging(args)
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
        output.restore()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["build_parser", "format_error", "main"]
