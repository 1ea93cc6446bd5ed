"""The one convention of every command: absl flags in a FlagValues of its own (no global state),
`main(argv) -> exit status`, --help, and bad input ended by one line on stderr.

Exit status: 0 done, 1 bad input (a file, a checkpoint, a value the command cannot use), 2 bad usage
(an unknown flag, a missing argument), 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from absl import flags


class UsageError(Exception):
    """The command line itself is wrong (exit status 2)."""


class HelpShown(Exception):
    """--help was asked for and printed (exit status 0)."""


def parse(
    fv: flags.FlagValues, argv: Sequence[str] | None, *, prog: str, doc: str, positionals: Sequence[str] = ()
) -> list[str]:
    """Parses argv (default sys.argv[1:]) into `fv`; returns the positional arguments named `positionals`.

    Raises HelpShown after printing usage for -h/--help, UsageError for unknown flags, bad values or a
    wrong number of positional arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        names = "".join(f" {name.upper()}" for name in positionals)
        print(f"usage: {prog}{names} [flags]\n\n{doc.strip()}\n\nflags:")
        for name in sorted(fv):
            flag = fv[name]
            print(f"  --{name}: {flag.help}" + (f" (default: {flag.default!r})" if flag.default else ""))
        raise HelpShown
    try:
        rest = fv([prog, *argv])[1:]
    except flags.Error as error:
        raise UsageError(str(error)) from None
    if len(rest) != len(positionals):
        want = " ".join(name.upper() for name in positionals) or "no positional arguments"
        raise UsageError(f"expected {want}, got {rest or 'none'}")
    return rest


CACHE_ENV = "KERNELSPACE_JAX_CACHE"  # the commands' compilation cache folder, or "0" for none


def enable_compilation_cache() -> str | None:
    """Turns on jax's persistent compilation cache for a command, so a second run starts at once.

    The folder is $KERNELSPACE_JAX_CACHE, else $XDG_CACHE_HOME/kernelspace_jax/xla (default
    ~/.cache/kernelspace_jax/xla); KERNELSPACE_JAX_CACHE=0 turns it off, and a cache folder already set
    in jax's config (JAX_COMPILATION_CACHE_DIR) is kept. Returns the folder in use, or None.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    folder = os.environ.get(CACHE_ENV)
    if folder == "0":
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "kernelspace_jax", "xla")
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def define_verbosity(fv: flags.FlagValues) -> None:
    """--verbosity: what is logged besides the command's own lines and progress bar."""
    flags.DEFINE_enum(
        "verbosity",
        "quiet",
        ["quiet", "info", "debug"],
        "quiet: this package's lines only; info / debug: every library's log too (Orbax, grain, ...).",
        flag_values=fv,
    )


def setup_logging(verbosity: str = "quiet") -> None:
    """This package's INFO lines to stderr as plain text; other libraries' only with verbosity info/debug."""
    ours = logging.getLogger("kernelspace_jax")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if verbosity == "debug" else logging.INFO)
    ours.propagate = False  # its own handler: no second copy through the root logger
    level = {"quiet": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}[verbosity]
    logging.getLogger().setLevel(level)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity({"quiet": "warning", "info": "info", "debug": "debug"}[verbosity])
    except ImportError:
        pass


def check_config(fv: flags.FlagValues, name: str = "config") -> None:
    """UsageError if the config file of flag `name` failed to load (config_flags defers the error to the
    first use of the config); the message is one line and lists the installed recipes."""
    try:
        getattr(fv[name].value, "keys", None)
    except OSError as error:
        from kernelspace_jax import configs

        reason = str(error).strip().splitlines()[-1].strip()
        raise UsageError(
            f"cannot load --{name}: {reason}; give a recipe file or one of {', '.join(configs.recipes())}"
        ) from None


def usage_error(prog: str, error: Exception) -> int:
    """Prints a usage error in one line (and where help is) and returns exit status 2.

    ml_collections puts the traceback of an error raised by a recipe's get_config (an unknown
    variant, say) into its flag error: only the flag and the error's own last line are kept."""
    message = str(error)
    head, traceback_found, rest = message.partition("\nTraceback (most recent call last):")
    if traceback_found:
        lines = [line for line in rest.strip().splitlines() if line.strip()]
        message = f"{head.strip()} {lines[-1].strip() if lines else ''}".strip()
    print(f"error: {message} ({prog} --help lists the flags)", file=sys.stderr)
    return 2


def input_error(error: Exception) -> int:
    """Prints a bad-input error in one line and returns exit status 1."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"error: {message}", file=sys.stderr)
    return 1
