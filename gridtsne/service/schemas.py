"""The request body of ``POST /v2/visualizations``: strict types, unknown fields refused.

FastAPI answers a body that does not fit with 422 and the path of each bad field
(``["body", "options", "grid"]``). ``options`` are the job's own flags; runner flags are
the operator's (``--flags_file``) and cannot be set by a caller.
"""
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
MAX_URLS = 1000


class JobOptions(BaseModel):
    """Flags of ``gridtsne run`` a caller may set (see ``gridtsne run --help``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Optional[str] = Field(None, max_length=200, description="embedding model")
    grid: Optional[str] = Field(None, pattern=r"^(auto|[1-9][0-9]{0,3}x[1-9][0-9]{0,3})$",
                                description="ROWSxCOLS or auto")
    assign: Optional[Literal["exact", "scalable", "auto"]] = None
    perplexity: Optional[float] = Field(None, gt=0, le=1000)
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)
    stable: Optional[bool] = Field(None, description="keep the previous map's positions")
    refit_fraction: Optional[float] = Field(None, ge=0, le=1)
    full: Optional[bool] = Field(None, description="embed every image again")
    keep_versions: Optional[int] = Field(None, ge=1, le=100)
    n_iter: Optional[int] = Field(None, ge=1, le=10000)
    early_exaggeration_iter: Optional[int] = Field(None, ge=0, le=10000)
    batch_size: Optional[int] = Field(None, ge=1, le=1024)
    cell: Optional[int] = Field(None, ge=8, le=1024)
    tile: Optional[int] = Field(None, ge=64, le=4096)
    format: Optional[Literal["jpeg", "webp"]] = None
    title: Optional[str] = Field(None, max_length=200)
    quality_items: Optional[int] = Field(None, ge=10, le=100000)

    def to_flags(self):
        """The ``gridtsne run`` flags these options stand for, in field order.

        Each value is joined to its flag (``--title=-x``), so a value that begins with '-'
        stays a value.
        """
        flags = []
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, bool):
                flags += [f"--{name}"] if value else []
            else:
                flags.append(f"--{name}={value}")
        return flags


class VisualizationRequest(BaseModel):
    """What to map: ``inputs`` and/or ``manifests``, optional ``labels``, ``output``, ``options``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: list[Url] = Field(default_factory=list, max_length=MAX_URLS,
                              description="image URLs, folders or globs (** = any depth)")
    manifests: list[Url] = Field(default_factory=list, max_length=MAX_URLS,
                                 description="URLs of text files listing one image URL a line")
    labels: Optional[Url] = Field(None, description="CSV of path,label or uri,label")
    output: Optional[Url] = Field(None, description="an existing map to re-index, a new map "
                                                    "name, or a URL under the output root")
    options: JobOptions = Field(default_factory=JobOptions)

    @model_validator(mode="after")
    def _needs_images(self):
        if not self.inputs and not self.manifests:
            raise ValueError("give at least one of inputs or manifests")
        return self
