"""The ``screening`` command: the group, and each command group from its own module
(service/cli/<group>.py). The modules share service/cli/common.py and never import this one."""
from __future__ import annotations

import click

from service.cli.batch import batch_command
from service.cli.evaluate import evaluate
from service.cli.keys import keys_group
from service.cli.rules import rules
from service.cli.schemas import schemas_group
from service.cli.serve import serve
from service.cli.users import users as users_group


@click.group()
@click.version_option(package_name="ketamine-screening")
def main() -> None:
    """Ketamine treatment screening: decisions with every reason, from declarative rules."""


for command in (serve, evaluate, rules, batch_command, schemas_group, users_group, keys_group):
    main.add_command(command)
