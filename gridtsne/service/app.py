"""The FastAPI app of ``gridtsne serve``: the /v2/visualizations endpoints (OpenAPI at /docs).

Handlers only check, translate and answer; the store keeps the jobs, the runner runs them,
``security`` decides which URLs may be named and ``links`` which URLs a browser gets.
"""
import contextlib
import hashlib
import json
import secrets
import time

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (FileResponse, HTMLResponse, JSONResponse, PlainTextResponse,
                               RedirectResponse)
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from gridtsne.service import jobs, keys, links, responses, security
from gridtsne.service import store as S
from gridtsne.service.limits import RateLimiter
from gridtsne.service.schemas import VisualizationRequest
from gridtsne.service.security import Refused, check_url, output_url

ACTIVE_RETRY_AFTER_S = 30
MAX_IDEMPOTENCY_KEY = 255
MAX_PAGE = 100
MAX_OFFSET = 2**62  # SQLite's integers are 64-bit: a larger offset would be a 500


class BodyLimit:
    """Pure ASGI middleware: 413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app, limit):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.limit:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            chunks.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._too_large(send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return chunks.pop(0) if chunks else await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send):
        body = json.dumps({"detail": f"the request body is over the limit of {self.limit} "
                                     f"bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _field(loc):
    return ".".join(str(part) for part in loc)


def _validation_answer(errors):
    """422 naming each bad field: ``{"detail": [...], "message": "body.options.grid: ..."}``."""
    clean = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in clean)
    return JSONResponse({"detail": clean, "message": message}, status_code=422)


def _openapi_with_body_schema(app):
    """The generated OpenAPI plus the request body schema (the body is parsed by hand)."""
    def openapi():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            body = VisualizationRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps.update(body.pop("$defs", {}))
            comps["VisualizationRequest"] = body
            comps["Error"] = ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema
    return openapi


ERRORS = {
    400: "a URL or model this server refuses (the message names the field and says why)",
    401: "no API key, or an unknown or revoked one",
    403: "the output is, lies inside or contains a map of another API key",
    404: "no such visualization for this key",
    409: "it has already ended (DELETE), or the output nests in one of this key's maps",
    413: "the request body is over --max_body_bytes",
    422: "malformed JSON, a wrong type, an unknown field or a value out of range",
    429: "over the key's rate or active-jobs limit; Retry-After says when to try again",
}
ERROR_SCHEMA = {
    "type": "object", "required": ["detail"],
    "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array"}]},
                   "message": {"type": "string"}},
}


def _errors(*codes):
    """The OpenAPI ``responses`` entry of the error statuses an endpoint can answer."""
    return {code: {"description": ERRORS[code], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}} for code in codes}


DOCS_ASSETS = "/docs/assets"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def docs_page(assets):
    """The /docs page: Swagger UI over /openapi.json.

    With ``--docs_assets DIR`` (the ``swagger-ui-dist`` npm package's files) the page loads
    Swagger UI from this server alone; without it, from jsDelivr, and the page says so and how
    to serve them here instead (the text shows even when the CDN cannot be reached).
    """
    if assets:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json", title="gridtsne API",
            swagger_js_url=f"{DOCS_ASSETS}/{SWAGGER_FILES[0]}",
            swagger_css_url=f"{DOCS_ASSETS}/{SWAGGER_FILES[1]}",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")
        return page
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="gridtsne API",
                               swagger_favicon_url="data:,")
    note = ('<p id="docs-assets-note" style="font: 14px sans-serif; margin: 8px 16px">This '
            'page loads Swagger UI from cdn.jsdelivr.net. To serve it from this server '
            'instead (offline, no third-party request), start it with <code>--docs_assets '
            'DIR</code>, DIR holding the files of the npm package <code>swagger-ui-dist'
            '</code> (docs/service.md). The API itself is described at '
            '<a href="/openapi.json">/openapi.json</a>.</p>')
    body = page.body.decode("utf-8").replace("<body>", "<body>\n" + note, 1)
    return HTMLResponse(body)


def create_app(config, store=None):
    """The ASGI app for ``config``; the job runner starts and stops with it (lifespan)."""
    secret = keys.load_secret(config.secret_file)

    def share_token(job_id):
        return keys.share_token(secret, job_id)

    store = store or S.Store(config.database,
                             share_hash=lambda job_id: keys.hash_key(share_token(job_id)))
    runner = jobs.JobRunner(config, store)
    limiter = RateLimiter(config.requests_per_minute)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        runner.start()
        try:
            yield
        finally:
            await run_in_threadpool(runner.stop)

    app = FastAPI(
        title="gridtsne", version="2", lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Maps of image collections by visual similarity: POST a visualization, "
                    "poll it until SUCCEEDED, open `output.data.image.url`. Every endpoint "
                    "but /healthz and /maps needs `Authorization: Key <key>`.")
    app.state.store, app.state.runner, app.state.config = store, runner, config
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.openapi = _openapi_with_body_schema(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc):
        return _validation_answer(exc.errors())

    async def caller(request: Request):
        """The key row of the request's API key; 401 without a valid one, 429 over the rate.

        Runs on the event loop: one indexed SQLite read, no thread hop per request.
        """
        key = keys.key_from_header(request.headers.get("authorization"))
        if key is None:
            raise HTTPException(401, "an API key is needed: send 'Authorization: Key <key>'",
                                headers={"WWW-Authenticate": "Key"})
        row = store.key_by_hash(keys.hash_key(key))
        if row is None:
            raise HTTPException(401, "unknown or revoked API key",
                                headers={"WWW-Authenticate": "Key"})
        wait = limiter.hit(row["id"])
        if wait:
            raise HTTPException(429, f"this key made more than {config.requests_per_minute} "
                                     f"requests in a minute; retry in {wait} s",
                                headers={"Retry-After": str(wait)})
        return row

    def base_url(request):
        return (config.public_url.rstrip("/") + "/") if config.public_url else str(
            request.base_url)

    def answer(job, request, with_progress=True):
        base = base_url(request)
        data_links = progress = None
        if job["status"] == S.SUCCEEDED and job.get("result"):
            try:
                data_links = links.map_links(job["output"], job["result"]["version"],
                                             share_token(job["id"]), base,
                                             config.signed_url_expiry, config.storage_options)
            except Exception as err:  # the store cannot sign: say so, keep the rest
                data_links = {"error": f"could not make the map's URLs: {err}"}
        if job["status"] == S.RUNNING and with_progress:
            progress = jobs.read_progress(job["output"], job.get("version_id"),
                                          config.storage_options)
        return responses.visualization(job, base, data_links, progress)

    async def answer_async(job, request):
        """:func:`answer`, off the event loop only where it may wait on a remote store.

        Everything else stays on the loop: a pool of threads contending for the GIL on a
        loaded machine is what made the latency tail seconds long (benchmarks/api_load.py).
        """
        if links.is_local(job["output"]) or job["status"] not in (S.RUNNING, S.SUCCEEDED):
            return answer(job, request)
        return await run_in_threadpool(answer, job, request)

    def owned(job_id, key):
        job = store.get_job(job_id, key["id"])
        if job is None:
            raise HTTPException(404, f"no visualization {job_id!r} for this key")
        return job

    def check_model(options):
        model = options.get("model")
        if model is None:
            return
        if config.allow_model and model not in config.allow_model:
            raise HTTPException(400, f"options.model: {model!r} is not offered here "
                                     f"(offered: {', '.join(config.allow_model)})")
        if not config.allow_model and ":" in model:
            raise HTTPException(400, f"options.model: {model!r} names code to import, which "
                                     "this server allows only when listed in --allow_model")
        known = None if config.allow_model else jobs.registered_models(config.python)
        if known is not None and model not in known:
            raise HTTPException(422, f"options.model: {model!r} is not a model of gridtsne "
                                     f"(known: {', '.join(known)})")

    def check_output(output, key, clash):
        """403 when ``output`` overlaps another key's map, 409 when it nests in the caller's own
        (a map's pruning would delete one inside it); ``clash``: the overlapping outputs."""
        if any(k != key["id"] for k, _ in clash):
            raise HTTPException(403, f"output: {output!r} is, lies inside or contains a map of "
                                     "another API key")
        nested = sorted(o for _, o in clash if o != output)
        if nested:
            raise HTTPException(409, f"output: {output!r} lies inside or contains your map "
                                     f"{nested[0]!r}; a map cannot hold another")

    def create(body, key, idempotency_key):
        try:
            inputs = [check_url(f"inputs[{i}]", u, config.allow_input)
                      for i, u in enumerate(body.inputs)]
            manifests = [check_url(f"manifests[{i}]", u, config.allow_input)
                         for i, u in enumerate(body.manifests)]
            labels = body.labels and check_url("labels", body.labels, config.allow_input)
            job_id = "v" + secrets.token_hex(10)
            output = output_url("output", body.output, config.output_root, job_id)
        except Refused as err:
            raise HTTPException(400, str(err)) from None
        options = body.options.model_dump(exclude_none=True)
        check_model(options)
        request_doc = {"inputs": inputs, "manifests": manifests, "labels": labels,
                       "output": body.output, "options": options,
                       "flags": body.options.to_flags()}
        digest = hashlib.sha256(json.dumps(request_doc, sort_keys=True).encode()).hexdigest()
        try:
            job, created = store.create_job(
                {"id": job_id, "key_id": key["id"], "status": S.PENDING,
                 "request": request_doc, "output": output,
                 "idempotency_key": idempotency_key, "request_hash": digest,
                 "share_hash": keys.hash_key(share_token(job_id)), "created": time.time()},
                max_active=config.max_active_per_key,
                check_output=lambda clash: check_output(output, key, clash))
        except S.LimitExceeded:
            raise HTTPException(429, f"this key already has {config.max_active_per_key} "
                                     "pending or running visualizations; retry when one "
                                     "has ended", headers={"Retry-After":
                                                           str(ACTIVE_RETRY_AFTER_S)}) from None
        except S.IdempotencyConflict:
            raise HTTPException(422, "Idempotency-Key: this key was already used with a "
                                     "different request body") from None
        if created:
            runner.wake()
        return job, created

    body_doc = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/VisualizationRequest"}}}},
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "the same key with the same body gives the same "
                                       "visualization",
                        "schema": {"type": "string", "minLength": 1,
                                   "maxLength": MAX_IDEMPOTENCY_KEY}}]}

    @app.post("/v2/visualizations", status_code=202, openapi_extra=body_doc,
              responses=_errors(400, 401, 403, 409, 413, 422, 429),
              summary="Start a visualization (answers at once; poll its status)")
    async def post_visualization(request: Request, key=Depends(caller)):
        idem = request.headers.get("idempotency-key")
        if idem is not None and not 0 < len(idem) <= MAX_IDEMPOTENCY_KEY:
            raise HTTPException(400, f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} "
                                     "characters")
        raw = await request.body()
        try:
            # Any content type: `curl -d` sends JSON as form data unless told otherwise.
            body = VisualizationRequest.model_validate_json(raw or b"null")
        except ValidationError as err:
            return _validation_answer([{**e, "loc": ("body", *e["loc"])}
                                       for e in err.errors(include_url=False)])
        urls = [*body.inputs, *body.manifests, body.labels or ""]
        if any(u.lower().startswith(security.WEB_SCHEMES) for u in urls) or (
                body.options.model and not jobs.models_known()):
            # Checking web URLs resolves their host names, and the first look at the model
            # registry starts a Python: not on the event loop.
            job, created = await run_in_threadpool(create, body, key, idem)
        else:
            job, created = create(body, key, idem)
        headers = {} if created else {"Idempotent-Replayed": "true"}
        content = {"output": await answer_async(job, request)}
        return JSONResponse(content, status_code=202, headers=headers)

    @app.get("/v2/visualizations/{job_id}", responses=_errors(401, 404, 422, 429),
             summary="A visualization's status and result")
    async def get_visualization(job_id: str, request: Request, key=Depends(caller)):
        return JSONResponse({"output": await answer_async(owned(job_id, key), request)})

    @app.get("/v2/visualizations", responses=_errors(401, 422, 429),
             summary="This key's visualizations, newest first")
    def list_visualizations(request: Request, key=Depends(caller),
                            offset: int = Query(0, ge=0, le=MAX_OFFSET),
                            limit: int = Query(20, ge=1, le=MAX_PAGE)):
        rows, total = store.list_jobs(key["id"], offset, limit)
        nxt = offset + len(rows) if offset + len(rows) < total else None
        return {"outputs": [answer(r, request, with_progress=False) for r in rows],
                "pagination": {"offset": offset, "limit": limit, "total": total,
                               "next_offset": nxt}}

    @app.delete("/v2/visualizations/{job_id}", responses=_errors(401, 404, 409, 422, 429),
                summary="Cancel a pending or running one")
    def delete_visualization(job_id: str, request: Request, key=Depends(caller)):
        owned(job_id, key)  # 404 unless it is this key's
        if store.cancel(job_id) is None:
            raise HTTPException(409, f"visualization {job_id!r} has already ended "
                                     f"({store.get_job(job_id)['status']}); nothing to cancel")
        runner.wake()
        return {"output": answer(store.get_job(job_id), request)}

    @app.get("/v2/visualizations/{job_id}/log", response_class=PlainTextResponse,
             responses=_errors(401, 404, 422, 429),
             summary="The job's log (its last `tail` bytes when given)")
    def get_log(job_id: str, key=Depends(caller),
                tail: int = Query(None, ge=1, le=16 * 1024 * 1024)):
        owned(job_id, key)
        return PlainTextResponse(jobs.read_log(config, job_id, tail=tail))

    if config.docs_assets:
        app.mount(DOCS_ASSETS, StaticFiles(directory=config.docs_assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return docs_page(config.docs_assets)

    @app.get("/healthz", summary="Liveness (no key needed)")
    def healthz():
        return {"status": "ok"}

    @app.get(links.SHARE_PREFIX + "/{token}", include_in_schema=False)
    def shared_root(token: str):
        return RedirectResponse(f"{links.SHARE_PREFIX}/{token}/")

    @app.get(links.SHARE_PREFIX + "/{token}/{path:path}", include_in_schema=False)
    def shared_map(token: str, path: str):
        job = store.job_by_share_hash(keys.hash_key(token))
        target = None
        if job is not None and links.is_local(job["output"]) and job.get("result"):
            target = links.shared_file(job["output"], job["result"]["version"], path)
        if target is None:
            raise HTTPException(404, "no such map file")
        return FileResponse(target, headers={"X-Content-Type-Options": "nosniff",
                                             "Cache-Control": "private, max-age=3600"})

    return app
