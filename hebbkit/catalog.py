"""The workbook's notebooks, in order: the one list of them (the command line, the headless runner and the tests
read it). The standard library only, so that ``hebbkit --help`` stays fast.

>>> NOTEBOOKS[0], notebook_numbers()[-1] == NOTEBOOKS[-1][:2]
('00_overview', True)
"""

from __future__ import annotations

NOTEBOOKS = (
    "00_overview",
    "01_rules_and_losses",
    "02_single_neuron",
    "03_conv_filters",
    "04_semi_supervised_pipeline",
    "05_results_table",
    "06_state_of_the_art",
)


def notebook_numbers() -> tuple[str, ...]:
    """The notebooks' two-digit prefixes, which ``--only`` accepts as well as the full names."""
    return tuple(name.split("_")[0] for name in NOTEBOOKS)
