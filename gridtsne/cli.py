"""The ``gridtsne`` console script: ``gridtsne <command> [flags]`` runs one pipeline module.

Each command forwards its flags untouched to that module's ``run(argv)``, so Beam's own flags
(``--runner``, ``--direct_num_workers`` ...) pass straight through. ``gridtsne <command> --help``
lists the command's own flags. A failure prints one line (``gridtsne run: error: ...``) and exits
with status 1; with ``--verbose`` the traceback is shown instead.
"""
import importlib
import sys

COMMANDS = {
    "run": ("pipelines.run", "embed, lay out and render in one job (--input and --output)"),
    "demo": ("pipelines.demo", "the whole job on offline sample photos into demo-output/map"),
    "embed": ("pipelines.embed", "embed images into a Parquet table of vectors and thumbnails"),
    "layout": ("pipelines.layout", "t-SNE and grid assignment of a vectors table"),
    "render": ("pipelines.render", "tiled Deep Zoom mosaic, overview images and the web page"),
    "evaluate": ("pipelines.evaluate", "quality figures (DPQ, neighbour label agreement) of a layout"),
    "export-projector": ("pipelines.projector", "a TensorBoard Projector folder of the vectors"),
    "serve": ("pipelines.serve", "the HTTP API that runs visualizations (docs/service.md)"),
}


def _usage():
    lines = ["usage: gridtsne <command> [flags]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gridtsne: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        result = module.run(rest)
    except KeyboardInterrupt:
        print(f"gridtsne {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if "--verbose" in rest:
            raise
        print(f"gridtsne {name}: error: {one_line(exc)} (--verbose shows the traceback)",
              file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def one_line(exc):
    """``exc`` as one line: its message's first line, with the type unless a ValueError."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else repr(exc)
    return text if type(exc) is ValueError else f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
