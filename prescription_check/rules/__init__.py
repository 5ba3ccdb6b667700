"""Rule modules.  Each exposes ``run(ctx) -> list[Finding]``; ``ALL`` is the order the engine runs them."""

from prescription_check.rules import allergy, dose, duplicates, interactions, patient

ALL = (interactions.run, duplicates.run, allergy.run, dose.run, patient.run)
