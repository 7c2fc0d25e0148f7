"""What the stages' PipelineOptions classes share: flag registration, local paths, storage
options, the input allowlist."""
import argparse
import json
import os

from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from gridtsne import input_policy


def add_flag(parser, *args, **kwargs):
    """``parser.add_argument``, sharing a flag another stage already defines.

    Every PipelineOptions subclass imported in a process adds its flags to one parser, so
    ``--output`` (embed, layout, render, run) must be defined once and shared, not a crash.
    """
    try:
        parser.add_argument(*args, **kwargs)
    except argparse.ArgumentError:
        pass


def local_abs(url):
    """``url`` with a plain local path made absolute; URLs and ``::`` chains unchanged.

    Workers may run in another directory than the launcher, so relative paths are resolved
    once, at launch.
    """
    if url is None or "://" in url or "::" in url:
        return url
    return os.path.abspath(url)


def parse_storage_options(text):
    """``--storage_options`` JSON -> ``{protocol: {option: value}}`` (ValueError if malformed)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--storage_options must be JSON such as "
                         f"'{{\"s3\": {{\"endpoint_url\": \"http://...\"}}}}', got {text!r}: "
                         f"{exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(f"--storage_options must map a protocol to its options, got {text!r}")
    return value


def storage_options_for(endpoint_url=None, key=None, secret=None, region=None, extra=None):
    """The per-protocol fsspec options every job config carries to its workers.

    Beam's ``--s3_*`` flags become s3fs options, so Beam's own S3 IO and fsspec talk to the
    same endpoint with the same keys; ``extra`` (``--storage_options``) adds any protocol's
    options and wins over the flags.
    """
    s3 = {}
    if endpoint_url:
        s3["endpoint_url"] = endpoint_url
    if key:
        s3["key"] = key
    if secret:
        s3["secret"] = secret
    if region:
        s3["client_kwargs"] = {"region_name": region}
    options = {"s3": s3} if s3 else {}
    for protocol, values in (extra or {}).items():
        options[protocol] = {**options.get(protocol, {}), **values}
    return options


class StorageOptions(PipelineOptions):
    """``--storage_options``: fsspec options per protocol, for stores Beam's flags do not cover."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(parser, "--storage_options", default=None,
                 help="JSON mapping a protocol to fsspec options, e.g. "
                      "'{\"gs\": {\"project\": \"p\"}}'; Beam's --s3_* flags fill the s3 entry")


class InputPolicyOptions(PipelineOptions):
    """``--allow_input``: the URL prefixes a job may read inputs from (none given: any)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(parser, "--allow_input", action="append", default=None, metavar="PREFIX",
                 help="read inputs only under this URL prefix or folder (repeat it): manifest "
                      "lines, listed files, symlink targets and redirects outside every "
                      "prefix become errors/ rows, unread; web inputs must reach public "
                      "addresses. `gridtsne serve` passes its own. Default: no limit")


def input_policy_from(options):
    """The job's :class:`~gridtsne.input_policy.InputPolicy`, or None without ``--allow_input``."""
    return input_policy.from_prefixes(options.view_as(InputPolicyOptions).allow_input)


def storage_options_from(options):
    """The storage options of a job from its PipelineOptions (``--s3_*``, ``--storage_options``).

    Under ``--allow_input`` its web reads go through sessions that check every connection and
    redirect (:meth:`gridtsne.input_policy.InputPolicy.storage_options`).
    """
    s3 = options.view_as(S3Options)
    opts = storage_options_for(s3.s3_endpoint_url, s3.s3_access_key_id, s3.s3_secret_access_key,
                               s3.s3_region_name,
                               parse_storage_options(options.view_as(StorageOptions)
                                                     .storage_options))
    policy = input_policy_from(options)
    return policy.storage_options(opts) if policy else opts


def add_storage_args(parser):
    """The same storage flags for a command that is not a Beam job (evaluate, projector)."""
    parser.add_argument("--s3_endpoint_url", default=None, help="S3-compatible endpoint URL")
    parser.add_argument("--s3_access_key_id", default=None, help="S3 access key id")
    parser.add_argument("--s3_secret_access_key", default=None, help="S3 secret access key")
    parser.add_argument("--s3_region_name", default=None, help="S3 region")
    parser.add_argument("--storage_options", default=None,
                        help="JSON mapping a protocol to fsspec options")


def storage_options_from_args(args):
    """:func:`storage_options_for` of the flags :func:`add_storage_args` added."""
    return storage_options_for(args.s3_endpoint_url, args.s3_access_key_id,
                               args.s3_secret_access_key, args.s3_region_name,
                               parse_storage_options(args.storage_options))


HELP_FLAGS = ("-h", "--help")
BEAM_EPILOG = ("Any other flag goes to Apache Beam untouched (--runner, --direct_num_workers, "
               "--s3_endpoint_url, --flags_file configs/NAME.flags ...).")
# Flags whose empty value (``--input=``, an unset shell variable in a cron line) would
# otherwise mean "here": the working directory, mapped recursively.
URL_FLAGS = ("--input", "--manifest", "--output", "--labels", "--vectors", "--layout",
             "--weights", "--flags_file", "--version_id")


def wants_help(argv):
    """Whether ``argv`` asks for ``--help`` (checked before anything is validated or run)."""
    return any(a in HELP_FLAGS for a in argv)


def stage_help(prog, description, *option_classes, extra=None):
    """The help text of a command: the flags its PipelineOptions classes define.

    ``extra(parser)`` adds flags that are parsed elsewhere (``--labels``).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=BEAM_EPILOG)
    for cls in option_classes:
        cls._add_argparse_args(parser)
    if extra is not None:
        extra(parser)
    return parser.format_help()


def refuse_empty_values(argv, flags=URL_FLAGS):
    """Raise ValueError when one of ``flags`` is given an empty value."""
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name not in flags:
            continue
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else None
        if value is not None and not value.strip():
            raise ValueError(f"{name} is empty (an unset shell variable?): give a URL or a path")
