"""``python -m training <command> ...``: one CLI for ML engineers.

Commands are dispatched to their modules so that each imports only what it needs
(``kb`` never imports torch).  ``python -m training --help`` lists them.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    # name: (module, help)
    "train": (None, "train <triage|ddi> [options]: train, evaluate, export and register a new version"),
    "triage": ("training.triage_train", "same as 'train triage'"),
    "ddi": ("training.ddi_train", "same as 'train ddi'"),
    "kb": ("prescription_check.kb_build", "build the prescription knowledge-base artefact"),
    "evaluate": ("training.lifecycle", "evaluate a registered version on a named data set"),
    "compare": ("training.lifecycle", "two versions side by side, per-class deltas"),
    "promote": ("training.lifecycle", "move the champion alias to a version that passes the gates"),
    "rollback": ("training.lifecycle", "move the champion alias back, with a reason (audited)"),
    "history": ("training.lifecycle", "alias changes; --at TIME says which version was serving then"),
    "card": ("training.lifecycle", "the model card of a registered version"),
}
TRAINERS = {"triage": "training.triage_train", "ddi": "training.ddi_train"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m training <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"\nerror: unknown command {argv[0]!r}")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    command = argv[0]
    if command == "train":
        if len(argv) < 2 or argv[1] not in TRAINERS:
            print(f"usage: python -m training train <{'|'.join(TRAINERS)}> [options]")
            return 2
        return int(importlib.import_module(TRAINERS[argv[1]]).main(argv[2:]) or 0)
    module = importlib.import_module(COMMANDS[command][0])
    if module.__name__ == "training.lifecycle":
        return int(module.main(argv) or 0)
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
