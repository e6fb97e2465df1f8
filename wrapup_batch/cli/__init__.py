"""The command line: the only package that imports click and tqdm.

A thin face over the library: each command gathers its options, calls the library
(`options`, `execution`, `checks`, `report`, ...) and prints what comes back; library errors
(`errors.py`) become one line on stderr and the exit code the design names (`common.py`).

Modules, one per command family: `batches` (`run`, `work`, `revert`), `reports` (`status`,
`report`), `org` (`codes`, `check`), `emulator`, `demo`, `serve`; `common` (errors, shared
options), `progress` (the tqdm bar and Ctrl-C while a batch works). Logs (`logs.py`):
`--log-format text|json` and `--log-file F`; every record passes through a redaction of the
client secret, URL passwords and bearer tokens before it is written anywhere.
"""

from __future__ import annotations

import click

from wrapup_batch import __version__
from wrapup_batch.cli.batches import revert, run, work
from wrapup_batch.cli.demo import demo
from wrapup_batch.cli.emulator import emulator
from wrapup_batch.cli.org import check, codes
from wrapup_batch.cli.reports import report, status
from wrapup_batch.cli.serve import serve
from wrapup_batch.options import SANDBOX_LEDGER

__all__ = ["SANDBOX_LEDGER", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wrapup-batch")
def main() -> None:
    """Bulk-apply Genesys Cloud wrap-up codes: throttled, resumable, every row recorded."""


for _command in (run, work, revert, status, report, codes, check, emulator, demo, serve):
    main.add_command(_command)
