"""What every ``mergemix`` verb shares: the ``verb`` decorator and the options that recur between verbs.

Why a module of its own: argparse spelled ``--config``, ``--stage`` and ``--log-level`` again for each
subcommand and wrapped each one's help by hand; here each is one decorator, so a verb's options read the same
everywhere and a new verb gets ``--config``, its examples and the error handling by being declared with
``@verb``. ``--config`` is taken before or after the verb (``mergemix --config smoke show`` and
``mergemix show --config smoke``); when it is given at several levels the one nearest the verb wins, as
before.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from mergemix_dagster.cli.errors import report_failure

CONFIG_HELP = "settings YAML path or bundled name (default, smoke, attempt6, hierarchy); default $MERGEMIX_CONFIG"
CONFIG_KEY = "mergemix.config"  # in click's ctx.meta, shared by the root group and every verb under it
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def write_examples(epilog: str | None, formatter: click.HelpFormatter) -> None:
    """The examples as written (aligned comments, shell continuations), not re-wrapped into a paragraph."""
    if epilog:
        formatter.write_paragraph()
        for line in epilog.splitlines():
            formatter.write(f"{line}\n")


def expand_abbreviations(args: list[str], params: list[click.Parameter], stop_at_positional: bool) -> list[str]:
    """``--from s0`` for ``--from-stage s0``: a unique prefix of a long option, as argparse accepted it.

    An exact name always wins; an ambiguous or unknown prefix is left for click to reject. A group stops at
    its first positional argument (the verb): what follows is the verb's to read.
    """
    longs = [o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--" or (stop_at_positional and not arg.startswith("-") and not (out and out[-1] in longs)):
            return out + args[i:]
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and name not in longs:
            matches = [o for o in longs if o.startswith(name)]
            if len(matches) == 1:
                arg = matches[0] + eq + value
        out.append(arg)
    return out


class VerbCommand(click.Command):
    """A verb whose ``--help`` ends with its examples verbatim."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_examples(self.epilog, formatter)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_abbreviations(args, self.get_params(ctx), stop_at_positional=False))


class VerbGroup(click.Group):
    """A group of verbs (``mergemix``, ``mergemix stage``): examples verbatim, verbs listed in the order
    they were added (the order of the docs), a missing verb a usage error (exit 2)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_examples(self.epilog, formatter)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_abbreviations(args, self.get_params(ctx), stop_at_positional=True))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:  # only a --config actually given; a later (inner) one overwrites an earlier one
        ctx.meta[CONFIG_KEY] = value
    return value


def config_option(fn: Callable) -> Callable:
    """``--config``, accepted by the root group, ``stage`` and every verb; read it with ``current_config``."""
    return click.option(
        "--config", metavar="CONFIG", default=None, expose_value=False, callback=_remember_config, help=CONFIG_HELP
    )(fn)


def current_config() -> str:
    """The ``--config`` nearest the verb, or ``""`` (then ``load_settings`` reads ``$MERGEMIX_CONFIG``)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(CONFIG_KEY, "") if ctx is not None else ""


def stage_option(default: str, help: str) -> Callable[[Callable], Callable]:
    return click.option("--stage", metavar="STAGE", default=default, help=help)


def log_level_option(default: str) -> Callable[[Callable], Callable]:
    return click.option(
        "--log-level", metavar="LOG_LEVEL", default=default, help="Dagster console log level (DEBUG, INFO, WARNING)"
    )


def repeatable(name: str, metavar: str | None, help: str | None = None, **kwargs: Any) -> Callable[[Callable], Callable]:
    """An option that may be given several times; the verb gets a list (empty when not given)."""
    return click.option(name, metavar=metavar, multiple=True, help=help, callback=lambda _c, _p, v: list(v), **kwargs)


def _description(help: str) -> str:
    return help[:1].upper() + help[1:] + "."


def verb(name: str, help: str, examples: str) -> Callable[[Callable[..., int]], click.Command]:
    """Declare ``fn(config, **options) -> exit code`` as the verb ``name``.

    ``help`` is the one line in the verb list (and, capitalized, the top of its ``--help``); ``examples``
    are printed under ``examples:``. The verb gets ``--config``; its exceptions become a named error on
    stderr and exit code 2, or an unexpected one and exit code 1 (``errors.report_failure``).
    """

    def decorate(fn: Callable[..., int]) -> click.Command:
        @functools.wraps(fn)
        def callback(**options: Any) -> int:
            quiet_libraries()
            try:
                return fn(current_config(), **options)
            except Exception as exc:
                return report_failure(exc, home_of(current_config()))

        return click.command(
            name, cls=VerbCommand, help=_description(help), short_help=help, epilog="examples:\n" + examples,
        )(config_option(callback))

    return decorate


def home_of(config: str) -> str | None:
    """The home of ``config``'s settings, where a failure's trace goes; None when they do not load."""
    try:
        from mergemix_dagster.core.settings import load_settings

        return str(load_settings(config or None).home_path)
    except Exception:  # the settings may be what failed: the trace then goes to $MERGEMIX_HOME
        return None


def verb_group(name: str, help: str, examples: str) -> click.Group:
    """A verb that only groups others (``mergemix stage add``); it takes ``--config`` too."""
    return click.group(
        name, cls=VerbGroup, help=_description(help), short_help=help, epilog="examples:\n" + examples,
        no_args_is_help=False,
    )(config_option(lambda: None))


def quiet_libraries() -> None:
    """Keep the terminal to our own progress lines (after parsing: ``--help`` stays fast)."""
    logging.basicConfig(level=logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - cosmetic only
        pass
