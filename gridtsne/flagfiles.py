"""Flag files: ready-made runner configurations kept in ``configs/``.

``--flags_file configs/dataflow-gpu.flags`` is replaced, in place, by the flags the file
lists (one per line, ``#`` comments), so flags given after it on the command line win. Values
may name environment variables as ``${VAR}`` or ``${VAR:-default}``, which keeps project ids and
bucket names out of the repository.
"""
import os
import re
import shlex

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(text, path):
    def repl(match):
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            raise ValueError(f"{path}: environment variable ${{{name}}} is not set "
                             f"(set it, or give the flag explicitly after --flags_file)")
        return value
    return _VAR.sub(repl, text)


def read_flags_file(path):
    """The flags listed in ``path``, with environment variables substituted."""
    flags = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                flags.extend(shlex.split(_substitute(line, path)))
    return flags


def expand_flags_files(argv):
    """``argv`` with every ``--flags_file PATH`` (or ``--flags_file=PATH``) expanded in place."""
    out, args = [], list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--flags_file":
            if i + 1 >= len(args):
                raise ValueError("--flags_file needs a path")
            out.extend(read_flags_file(args[i + 1]))
            i += 2
            continue
        if arg.startswith("--flags_file="):
            out.extend(read_flags_file(arg.split("=", 1)[1]))
        else:
            out.append(arg)
        i += 1
    return out
