"""``python -m training <command> ...``: one CLI for ML engineers.

Commands are dispatched to their modules so that each imports only what it needs
(``kb`` never imports torch).  ``python -m training --help`` lists them.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    # name: (module, help)
    "triage": ("training.triage_train", "fine-tune, evaluate, export and register the triage classifier"),
    "ddi": ("training.ddi_train", "train, evaluate, export and register the ddi-severity model"),
    "kb": ("prescription_check.kb_build", "build the prescription knowledge base artefact"),
    "lifecycle": ("training.lifecycle", "evaluate / compare / promote / rollback registered versions"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m training <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
