"""BatchesClient: the Message Batches API operations over one keep-alive httpx.Client, plus the
real-time and pass-through calls (messages, count_tokens, models) batchd makes beside them.

Every call goes through `_send` (auth headers, retries, error translation, metrics hooks).
"""

from __future__ import annotations

import builtins
import hashlib
import time
import weakref
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
import pydantic

from batchd.api.headers import Betas, passed_on, request_headers
from batchd.api.jsonl import (
    LineDecoder,
    decode_json_line,
    parse_result_line,
    read_result_line,
    result_from_object,
    result_from_value,
)
from batchd.api.models import (
    APIResponse,
    BatchPage,
    DeletedBatch,
    MessageBatch,
    MessageResponse,
    ResultLine,
)
from batchd.api.ratelimit import RateLimit
from batchd.api.retry import RetryPolicy
from batchd.api.stream import ResultsStream
from batchd.api.translate import excerpt, redact, redact_tree, status_error, transport_error
from batchd.errors import (
    APIError,
    APIResponseError,
    BodyLengthError,
    ConfigError,
    ResultsStreamError,
)
from batchd.logs import get_logger
from batchd.settings import Settings

BATCHES_PATH = "/v1/messages/batches"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"

#: Content types the results endpoint is known to use; an HTML or JSON page is not results.
RESULTS_CONTENT_TYPES = frozenset(
    {
        "",
        "application/x-jsonl",
        "application/jsonl",
        "application/x-ndjson",
        "application/ndjson",
        "application/binary",
        "application/octet-stream",
    }
)

#: How much of an error body is read: enough for any API error, bounded against a huge page.
ERROR_BODY_LIMIT = 64 * 1024
#: The largest body a pass-through call hands on; it is never handed on cut short.
PASSTHROUGH_BODY_LIMIT = 32 * 1024 * 1024

OnCall = Callable[[str, int | None, float], None]
#: Called with the line number and the error of a results line whose custom_id is unreadable.
OnBadLine = Callable[[int, APIResponseError], None]
#: Called with the rate-limit state of every answer that reports one.
OnRateLimit = Callable[[RateLimit], None]
Body = bytes | Iterable[bytes] | Callable[[], Iterable[bytes]]
Params = bytes | Mapping[str, Any]
Timeout = float | httpx.Timeout | None
_Model = TypeVar("_Model", bound=pydantic.BaseModel)


def _user_agent() -> str:
    try:
        return f"batchd/{metadata.version('batchd')}"
    except metadata.PackageNotFoundError:
        return "batchd"


class BatchesClient:
    """A synchronous client for one account's Anthropic API; closed when done.

    The Message Batches operations, the real-time Messages call and the pass-through calls
    share one keep-alive connection pool, one retry policy and the same error tree. Every
    answer's rate-limit headers are kept (`last_rate_limit`, `rate_limits`) and handed to
    `on_rate_limit`; every attempt is reported to `on_call(operation, status, seconds)`.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.anthropic.com",
        anthropic_version: str = "2023-06-01",
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        on_call: OnCall | None = None,
        on_rate_limit: OnRateLimit | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("BatchesClient needs an API key", ["api_key: missing"])
        self.base_url = base_url.rstrip("/")
        self.retry = retry if retry is not None else RetryPolicy()
        self._on_call = on_call
        self._on_rate_limit = on_rate_limit
        self._rate_limits: dict[str, RateLimit] = {}
        self._last_rate_limit: RateLimit | None = None
        # Kept only to scrub it from error excerpts a proxy might echo it into.
        self._secrets = (api_key,)
        self._sleep: Callable[[float], None] = time.sleep
        self._log = get_logger("batchd.api", base_url=self.base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "x-api-key": api_key,
                "anthropic-version": anthropic_version,
                "content-type": "application/json",
                "user-agent": _user_agent(),
            },
            # A 256 MB upload writes for a long time: writes get the read budget, not connect's.
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=read_timeout,
                write=read_timeout,
                pool=connect_timeout,
            ),
            transport=transport,
            # A redirect would carry the API key to wherever it points: it is an error instead.
            follow_redirects=False,
        )
        self._origin = _origin(httpx.URL(self.base_url))

    @classmethod
    def from_settings(cls, settings: Settings, account: str, **kw: Any) -> BatchesClient:
        """A client for one configured account; `kw` overrides any constructor argument."""
        if account not in settings.accounts:
            raise ConfigError(f"unknown account {account!r}", [f"accounts.{account}: missing"])
        api_key = settings.api_key(account)
        if not api_key:
            raise ConfigError(
                f"account {account!r} has no API key", [f"accounts.{account}.api_key: missing"]
            )
        api = settings.api
        options: dict[str, Any] = {
            "base_url": settings.base_url(account),
            "anthropic_version": api.anthropic_version,
            "connect_timeout": api.connect_timeout,
            "read_timeout": api.read_timeout,
            "retry": RetryPolicy.from_settings(api),
        }
        options.update(kw)
        return cls(api_key, **options)

    def __repr__(self) -> str:
        return f"BatchesClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    @property
    def last_rate_limit(self) -> RateLimit | None:
        """The rate-limit state of the latest answer that reported one, whatever its call."""
        return self._last_rate_limit

    @property
    def rate_limits(self) -> dict[str, RateLimit]:
        """The latest rate-limit state per scope (`batches`, `messages`, `count_tokens`,
        `models`): each has its own limits, so each keeps its own latest answer."""
        return dict(self._rate_limits)

    def __enter__(self) -> BatchesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the Message Batches operations ---------------------------------------------------

    def create(
        self,
        body: Body,
        content_length: int,
        *,
        retries: bool = True,
        betas: Betas | None = None,
    ) -> MessageBatch:
        """POST a batch whose JSON body is streamed from `body`, exactly `content_length` bytes.

        `body` is an iterable of bytes chunks, or a factory returning a fresh one. The chunks are
        sent as they come, never joined. Retries happen only when `retries` is true and the body
        can be produced again (a factory, or a list/tuple/bytes); otherwise one attempt is made
        and any failure is raised. An exception raised by the body iterator aborts the upload
        (the connection is dropped before the body is complete) and propagates unchanged; a
        body of the wrong total size raises BodyLengthError the same way.

        `betas` are sent as `anthropic-beta` (sorted, comma-separated) and apply to every
        request of the batch; batches of different beta sets are different batches.
        """
        if content_length < 0:
            raise ValueError("content_length must be >= 0")
        headers = request_headers(betas)
        factory, repeatable = _body_factory(body)

        def checked() -> Iterator[bytes]:
            return _length_checked(factory(), content_length)

        response = self._send(
            "create",
            "POST",
            BATCHES_PATH,
            body=checked,
            content_length=content_length,
            max_retries=self.retry.max_retries if retries and repeatable else 0,
            headers=headers,
        )
        batch = self._parse(response, MessageBatch, "create")
        self._log.info(
            "batch created",
            batch_id=batch.id,
            requests=batch.total,
            bytes=content_length,
            betas=headers.get("anthropic-beta"),
            request_id=response.headers.get("request-id"),
        )
        return batch

    def retrieve(self, batch_id: str, *, betas: Betas | None = None) -> MessageBatch:
        """The batch's current state (the polling call), `results_url` included once ended."""
        response = self._send(
            "retrieve", "GET", _batch_path(batch_id), headers=request_headers(betas)
        )
        return self._parse(response, MessageBatch, "retrieve")

    def list(
        self,
        *,
        before_id: str | None = None,
        after_id: str | None = None,
        limit: int = 20,
        betas: Betas | None = None,
    ) -> BatchPage:
        """One page of the account's batches, newest first."""
        params: dict[str, str | int] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        if after_id is not None:
            params["after_id"] = after_id
        response = self._send(
            "list", "GET", BATCHES_PATH, params=params, headers=request_headers(betas)
        )
        return self._parse(response, BatchPage, "list")

    def iter_batches(
        self,
        *,
        limit: int = 100,
        after_id: str | None = None,
        before_id: str | None = None,
        betas: Betas | None = None,
    ) -> Iterator[MessageBatch]:
        """Every batch, page after page, newest first (from `after_id` on, if given).

        Given only `before_id`, pages walk towards newer batches (each page still newest first).
        """
        backwards = before_id is not None and after_id is None
        while True:
            page = self.list(before_id=before_id, after_id=after_id, limit=limit, betas=betas)
            yield from page.data
            if not page.has_more or not page.data:
                return
            cursor = page.first_id if backwards else page.last_id
            if cursor is None:
                raise APIResponseError("list page says has_more but gives no cursor id")
            if backwards:
                before_id = cursor
            else:
                after_id = cursor

    def cancel(self, batch_id: str, *, betas: Betas | None = None) -> MessageBatch:
        """Ask the API to cancel a batch; it answers with the batch, usually `canceling`."""
        response = self._send(
            "cancel", "POST", _batch_path(batch_id) + "/cancel", headers=request_headers(betas)
        )
        return self._parse(response, MessageBatch, "cancel")

    def delete(self, batch_id: str, *, betas: Betas | None = None) -> str:
        """Delete an ended batch; returns the deleted batch's id."""
        response = self._send(
            "delete", "DELETE", _batch_path(batch_id), headers=request_headers(betas)
        )
        return self._parse(response, DeletedBatch, "delete").id

    # -- results ----------------------------------------------------------------------------

    def results(
        self,
        batch_id: str,
        *,
        resume: bool = True,
        skip: int = 0,
        on_bad_line: OnBadLine | None = None,
        results_url: str | None = None,
        betas: Betas | None = None,
        expected: int | None = None,
        recover: bool = False,
    ) -> ResultsStream:
        """Stream a batch's results, one ResultLine per JSONL line, as they arrive.

        The results come from `results_url` when given (see `results_from`), else from the
        documented path of `batch_id`. `skip` drops the first `skip` lines (a caller resuming
        by count). With `resume`, a stream that breaks is requested again and lines whose
        custom_id was already delivered are skipped, so each line is seen once; after
        `max_retries` breaks without progress, ResultsStreamError says how many lines were
        delivered. The HTTP response is closed however the iteration ends; a caller stopping
        early should `close()` the stream (or let it be collected) to release the connection.

        A line that is not a result raises APIResponseError, unless
        `on_bad_line(line_number, error)` is given: then it is reported there (once, even if a
        resume reads it again) and skipped, since reading the stream again would only meet it
        again. With `recover` (the default of `results_from`), only lines whose custom_id
        cannot be read are such lines: one that is damaged (not valid UTF-8, not strict JSON,
        no result object) but names its custom_id is delivered flagged `damaged`, with what
        could be recovered (see ResultLine), since its request has an answer, possibly a
        billed one, and must not be sent again.

        The returned ResultsStream counts what it delivered and tells whether the download
        ended cleanly; with `expected` (the batch's size) it also tells whether it came short.
        """
        if skip < 0:
            raise ValueError("skip must be >= 0")
        url = self._results_location(batch_id, results_url)
        stream = ResultsStream(expected=expected)
        stream.attach(
            self._read_results(
                # A proxy, so the stream and its generator form no cycle: a dropped stream is
                # freed (and its connection closed) at once, not at the next cycle collection.
                weakref.proxy(stream),
                batch_id,
                url,
                headers=request_headers(betas),
                resume=resume,
                skip=skip,
                on_bad_line=on_bad_line,
                recover=recover,
            )
        )
        return stream

    def results_from(
        self,
        batch: MessageBatch,
        *,
        resume: bool = True,
        skip: int = 0,
        on_bad_line: OnBadLine | None = None,
        betas: Betas | None = None,
        recover: bool = True,
    ) -> ResultsStream:
        """Stream the results of an ended batch from its `results_url`, as the API asks.

        As `results`, except that damaged lines with a readable custom_id are delivered flagged
        (`recover`) unless told otherwise.

        The URL is fetched exactly when it is on the configured API's origin (scheme, host and
        port of `base_url`); only there is the API key sent. A `results_url` on another origin
        is never contacted, so the key cannot leak to it and no one else's answer is read as
        results. If its path is this batch's documented results path (a gateway in front of the
        API passing the API's answers through unchanged), that path is fetched from the
        configured API instead; any other foreign URL raises APIResponseError before any
        request. A batch that has ended without a `results_url` is read from the documented
        path. The stream's `expected` is the batch's size, to compare `lines` with.
        """
        if not batch.ended:
            raise ValueError(
                f"batch {batch.id} is {batch.processing_status}: it has no results before it ends"
            )
        return self.results(
            batch.id,
            resume=resume,
            skip=skip,
            on_bad_line=on_bad_line,
            results_url=batch.results_url,
            betas=betas,
            expected=batch.total,
            recover=recover,
        )

    def _results_location(self, batch_id: str, results_url: str | None) -> str:
        """What to GET for a batch's results: a path on the configured API, or a full URL on it."""
        documented = _batch_path(batch_id) + "/results"
        if results_url is None:
            return documented
        base = httpx.URL(self.base_url)
        try:
            url = httpx.URL(results_url)
        except httpx.InvalidURL as exc:
            raise APIResponseError(f"results_url of {batch_id} is not a URL: {exc}") from exc
        if not url.is_absolute_url:
            url = base.join(url)
        if url.scheme in ("http", "https") and _origin(url) == self._origin:
            return str(url)
        if url.raw_path.split(b"?", 1)[0] == documented.encode("ascii"):
            self._log.warning(
                "results_url is on another origin; reading the same path from the API",
                batch_id=batch_id,
                results_origin=f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}",
            )
            return documented + (f"?{url.query.decode('ascii')}" if url.query else "")
        raise APIResponseError(
            f"results_url of {batch_id} is on another origin than the configured API"
            f" ({url.scheme}://{url.netloc.decode('ascii', 'replace')}) and is not its results"
            " path: not followed, so the API key is not sent there"
        )

    def _read_results(
        self,
        stream: ResultsStream,
        batch_id: str,
        url: str,
        *,
        headers: dict[str, str],
        resume: bool,
        skip: int,
        on_bad_line: OnBadLine | None,
        recover: bool,
    ) -> Generator[ResultLine, None, None]:
        read_line = read_result_line if recover else parse_result_line
        read_last = _read_last_line if recover else _parse_last_line
        to_skip = skip
        # custom_ids already handed over (or skipped): the dedupe key when a stream is re-read.
        seen: set[str] | None = set() if resume else None
        # Unreadable lines have no custom_id: a re-read recognises them by their bytes, counted
        # as a multiset, so each is reported once however many times it is read.
        reported_bad: Counter[bytes] = Counter()
        breaks = 0

        def admit(item: ResultLine) -> bool:
            nonlocal to_skip
            if seen is not None and item.custom_id in seen:
                stream.repeated += 1
                return False
            if seen is not None:
                seen.add(item.custom_id)
            if to_skip:
                to_skip -= 1
                stream.skipped += 1
                return False
            stream.delivered += 1
            if item.damaged:
                stream.damaged += 1
            return True

        def unreadable(
            lineno: int, line: bytes, bad: APIResponseError, read: Counter[bytes]
        ) -> None:
            digest = hashlib.blake2b(line, digest_size=16).digest()
            read[digest] += 1
            if read[digest] <= reported_bad[digest]:
                return  # reported when an earlier download met it
            reported_bad[digest] = read[digest]
            stream.unreadable += 1
            if on_bad_line is None:
                raise bad
            on_bad_line(lineno, bad)

        while True:
            try:
                response = self._send("results", "GET", url, stream=True, headers=headers)
            except APIError as exc:
                if stream.downloads == 0:
                    raise
                # The caller needs the count to know what it already holds.
                raise ResultsStreamError(
                    f"results of {batch_id}: could not resume after {stream.delivered} lines:"
                    f" {exc}",
                    delivered=stream.delivered,
                    status=exc.status,
                    error_type=exc.error_type,
                    request_id=exc.request_id,
                    retry_after=exc.retry_after,
                ) from exc
            stream.downloads += 1
            read_bad: Counter[bytes] = Counter()
            before = stream.delivered
            failure: BaseException | None = None
            reason = ""
            try:
                self._check_results_type(response, batch_id)
                decoder = LineDecoder()
                try:
                    for chunk in response.iter_bytes():
                        for lineno, line in decoder.feed(chunk):
                            try:
                                item = read_line(line, lineno)
                            except APIResponseError as bad:
                                unreadable(lineno, line, bad, read_bad)
                                continue
                            if admit(item):
                                yield item
                except httpx.HTTPError as exc:
                    failure = exc
                    reason = f"{type(exc).__name__}: {redact(str(exc), self._secrets)}"
                else:
                    last = decoder.flush()
                    if last is not None:
                        # No newline at the very end: a whole JSON value is a last line, a cut
                        # one means the body ended early.
                        lineno, line = last
                        try:
                            item = read_last(line, lineno)
                        except _CutOff as exc:
                            failure = exc
                            reason = f"line {lineno} cut off at end of stream ({len(line)} bytes)"
                        except APIResponseError as bad:
                            unreadable(lineno, line, bad, read_bad)
                        else:
                            if admit(item):
                                yield item
                    if failure is None:
                        stream.ended_cleanly = True
                        return
            finally:
                response.close()
            if stream.delivered > before:
                breaks = 0
            if not resume or breaks >= self.retry.max_retries:
                raise ResultsStreamError(
                    f"results of {batch_id} broke after {stream.delivered} lines ({reason})",
                    delivered=stream.delivered,
                    request_id=response.headers.get("request-id"),
                ) from failure
            wait = self.retry.delay(breaks)
            breaks += 1
            self._log.warning(
                "results stream broke, resuming",
                batch_id=batch_id,
                delivered=stream.delivered,
                attempt=breaks,
                wait=round(wait, 3),
                reason=reason,
            )
            self._sleep(wait)

    # -- real-time and pass-through calls ----------------------------------------------------

    def messages_create(
        self,
        params: Params,
        *,
        betas: Betas | None = None,
        extra_headers: Mapping[str, str] | None = None,
        query: Mapping[str, str | int] | None = None,
        timeout: Timeout = None,
        retries: bool | int = True,
    ) -> MessageResponse:
        """One real-time Messages API call (`POST /v1/messages`); returns the Message.

        `params` is the request body: JSON bytes sent unchanged, or a mapping encoded here
        (`stream: true` is refused, this call reads one JSON answer). `retries` is True for the
        client's policy, False for a single attempt (so an unanswered call can be reconciled
        before anything is sent again: a resent message is billed again), or a number of
        retries. Error answers raise the same errors as every other call; an answer that is not
        a Message raises APIResponseError. `timeout` (seconds) bounds each read and write.
        """
        content = _params_bytes(params)
        response = self._send(
            "messages",
            "POST",
            MESSAGES_PATH,
            params=dict(query) if query else None,
            body=_whole(content),
            content_length=len(content),
            max_retries=self._retries(retries),
            headers=request_headers(betas, extra_headers),
            timeout=self._call_timeout(timeout),
        )
        answer = _answer("messages", response, response.content)
        message = answer.json()
        if not isinstance(message, dict) or message.get("type") != "message":
            raise APIResponseError(
                f"messages: answer is not a Message: {excerpt(response.content, self._secrets)!r}",
                status=response.status_code,
                request_id=answer.request_id,
            )
        return MessageResponse(
            status=answer.status,
            headers=answer.headers,
            content=answer.content,
            request_id=answer.request_id,
            rate_limit=answer.rate_limit,
            message=message,
        )

    def count_tokens(
        self,
        params: Params,
        *,
        betas: Betas | None = None,
        extra_headers: Mapping[str, str] | None = None,
        query: Mapping[str, str | int] | None = None,
        timeout: Timeout = None,
        retries: bool | int = True,
    ) -> APIResponse:
        """Pass-through of `POST /v1/messages/count_tokens`: the answer as it came, errors too."""
        content = _params_bytes(params)
        return self._pass_through(
            "count_tokens",
            "POST",
            COUNT_TOKENS_PATH,
            query=query,
            body=content,
            betas=betas,
            extra_headers=extra_headers,
            timeout=timeout,
            retries=retries,
        )

    def list_models(
        self,
        *,
        query: Mapping[str, str | int] | None = None,
        betas: Betas | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout = None,
        retries: bool | int = True,
    ) -> APIResponse:
        """Pass-through of `GET /v1/models` (`query`: before_id, after_id, limit as the caller
        gave them): the answer as it came, errors too."""
        return self._pass_through(
            "list_models",
            "GET",
            MODELS_PATH,
            query=query,
            betas=betas,
            extra_headers=extra_headers,
            timeout=timeout,
            retries=retries,
        )

    def retrieve_model(
        self,
        model_id: str,
        *,
        query: Mapping[str, str | int] | None = None,
        betas: Betas | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout = None,
        retries: bool | int = True,
    ) -> APIResponse:
        """Pass-through of `GET /v1/models/{model_id}`: the answer as it came, errors too."""
        if not model_id:
            raise ValueError("model_id must not be empty")
        return self._pass_through(
            "retrieve_model",
            "GET",
            f"{MODELS_PATH}/{quote(model_id, safe='')}",
            query=query,
            betas=betas,
            extra_headers=extra_headers,
            timeout=timeout,
            retries=retries,
        )

    def _pass_through(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None,
        betas: Betas | None,
        extra_headers: Mapping[str, str] | None,
        timeout: Timeout,
        retries: bool | int,
        body: bytes | None = None,
    ) -> APIResponse:
        """Send one call with the usual retries; hand back whatever the API answered last.

        An error status is returned, not raised (a proxy hands it to its caller as it came);
        only a call that got no answer at all raises. The body is never handed on cut short:
        one over PASSTHROUGH_BODY_LIMIT raises APIResponseError.
        """
        response = self._send(
            operation,
            method,
            path,
            params=dict(query) if query else None,
            body=_whole(body) if body is not None else None,
            content_length=len(body) if body is not None else None,
            max_retries=self._retries(retries),
            headers=request_headers(betas, extra_headers),
            timeout=self._call_timeout(timeout),
            stream=True,
            raise_errors=False,
        )
        try:
            content = _read_whole(response, PASSTHROUGH_BODY_LIMIT, operation)
        finally:
            response.close()
        return _answer(operation, response, content)

    def _retries(self, retries: bool | int) -> int:
        if isinstance(retries, bool):
            return self.retry.max_retries if retries else 0
        if retries < 0:
            raise ValueError("retries must be >= 0")
        return retries

    def _call_timeout(self, timeout: Timeout) -> httpx.Timeout | None:
        """A per-call timeout: seconds bound reads and writes; connecting keeps its budget."""
        if timeout is None or isinstance(timeout, httpx.Timeout):
            return timeout
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        default = self._http.timeout
        return httpx.Timeout(
            connect=default.connect, read=timeout, write=timeout, pool=default.pool
        )

    # -- the one request path -------------------------------------------------------------

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        body: Callable[[], Iterator[bytes]] | None = None,
        content_length: int | None = None,
        max_retries: int | None = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        raise_errors: bool = True,
    ) -> httpx.Response:
        """Send one API call with retries; return a 2xx response (still open when `stream`).

        `path` is relative to the base URL, or a full URL on the API's origin. Error statuses
        become APIStatusError subclasses, httpx failures APIConnectionError or
        APITimeoutError. With `raise_errors` false, the last error answer (once retries are
        spent, or at once when it is final) is returned open and unread instead of raised.
        Anything raised by the request body iterator propagates unchanged.
        """
        limit = self.retry.max_retries if max_retries is None else max_retries
        attempt = 0
        while True:
            request_headers_: dict[str, str] = dict(headers) if headers else {}
            content: Iterator[bytes] | None = None
            if body is not None:
                content = body()
                # An explicit length keeps httpx from chunking and lets the API refuse early.
                request_headers_["content-length"] = str(content_length)
            request = self._http.build_request(
                method,
                path,
                params=params,
                content=content,
                headers=request_headers_,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            started = time.monotonic()
            try:
                response = self._http.send(request, stream=True)
                if response.is_success and not stream:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.HTTPError as exc:
                self._record(operation, None, started)
                error = transport_error(exc, operation, self._secrets)
                if attempt >= limit or not self.retry.is_retryable(None):
                    raise error from exc
                self._before_retry(operation, attempt, None, error, self.retry.delay(attempt))
                attempt += 1
                continue
            self._record(operation, response.status_code, started)
            self._note_rate_limit(operation, response)
            if response.is_success:
                return response
            final = attempt >= limit or not self.retry.is_retryable(
                response.status_code, response.headers
            )
            if final and not raise_errors:
                return response
            try:
                data = _read_limited(response, ERROR_BODY_LIMIT)
            finally:
                response.close()
            status_exc = status_error(
                response.status_code, response.headers, data, secrets=self._secrets
            )
            if final:
                raise status_exc
            wait = self.retry.delay(attempt, status_exc.retry_after)
            self._before_retry(operation, attempt, response.status_code, status_exc, wait)
            attempt += 1

    def _before_retry(
        self, operation: str, attempt: int, status: int | None, error: APIError, wait: float
    ) -> None:
        self._log.warning(
            "api call failed, retrying",
            operation=operation,
            status=status,
            error=type(error).__name__,
            request_id=error.request_id,
            attempt=attempt + 1,
            wait=round(wait, 3),
        )
        self._sleep(wait)

    def _record(self, operation: str, status: int | None, started: float) -> None:
        if self._on_call is None:
            return
        try:
            self._on_call(operation, status, time.monotonic() - started)
        except Exception:  # a broken metrics hook must not fail an API call
            self._log.exception("on_call hook failed", operation=operation)

    def _note_rate_limit(self, operation: str, response: httpx.Response) -> None:
        limits = RateLimit.from_headers(
            response.headers, operation=operation, status=response.status_code
        )
        if limits is None:
            return
        self._rate_limits[limits.scope] = limits
        self._last_rate_limit = limits
        if self._on_rate_limit is None:
            return
        try:
            self._on_rate_limit(limits)
        except Exception:  # a broken metrics hook must not fail an API call
            self._log.exception("on_rate_limit hook failed", operation=operation)

    def _parse(self, response: httpx.Response, model: type[_Model], operation: str) -> _Model:
        request_id = response.headers.get("request-id")
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise APIResponseError(
                f"{operation}: answer is not JSON: {excerpt(response.content, self._secrets)!r}",
                status=response.status_code,
                request_id=request_id,
            ) from exc
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()[:3]
            )
            raise APIResponseError(
                f"{operation}: answer is not a {model.__name__}: {problems}",
                status=response.status_code,
                request_id=request_id,
                body=redact_tree(data, self._secrets),
            ) from exc

    def _check_results_type(self, response: httpx.Response, batch_id: str) -> None:
        content_type = response.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media in RESULTS_CONTENT_TYPES:
            return
        data = _read_limited(response, ERROR_BODY_LIMIT)
        raise APIResponseError(
            f"results of {batch_id} came as {media!r}, not JSONL: {excerpt(data, self._secrets)!r}",
            status=response.status_code,
            request_id=response.headers.get("request-id"),
        )


class _CutOff(ValueError):
    """The unterminated last line of a results body is not whole JSON: the body was cut."""


def _parse_last_line(line: bytes, lineno: int) -> ResultLine:
    """The unterminated last line, strictly: whole JSON is a line, anything else a cut."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _CutOff(str(exc)) from exc
    return result_from_object(value, line, lineno)


def _read_last_line(line: bytes, lineno: int) -> ResultLine:
    """The unterminated last line, recovering: JSON read leniently is a (damaged) line.

    A custom_id read from the raw bytes proves nothing here, since a cut line has one too.
    """
    try:
        value, problem = decode_json_line(line)
    except ValueError as exc:
        raise _CutOff(str(exc)) from exc
    return result_from_value(value, line, lineno, problem)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port: what must match for a URL to get the API key."""
    port = url.port
    if port is None:
        port = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, port)


def _params_bytes(params: Params) -> bytes:
    """A request body: bytes as given, a mapping encoded (without `stream: true`)."""
    if isinstance(params, bytes | bytearray | memoryview):
        return bytes(params)
    if params.get("stream"):
        raise ValueError("stream: true is not supported; this call reads one JSON answer")
    return orjson.dumps(dict(params))


def _whole(content: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter((content,) if content else ())


def _answer(operation: str, response: httpx.Response, content: bytes) -> APIResponse:
    return APIResponse(
        status=response.status_code,
        headers=passed_on(response.headers),
        content=content,
        request_id=response.headers.get("request-id"),
        rate_limit=RateLimit.from_headers(
            response.headers, operation=operation, status=response.status_code
        ),
    )


def _read_whole(response: httpx.Response, limit: int, operation: str) -> bytes:
    """The whole body, or APIResponseError when it is over `limit` or breaks off."""
    pieces: builtins.list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise APIResponseError(
                    f"{operation}: answer is over {limit} bytes",
                    status=response.status_code,
                    request_id=response.headers.get("request-id"),
                )
            pieces.append(chunk)
    except httpx.HTTPError as exc:
        raise APIResponseError(
            f"{operation}: answer broke off after {size} bytes ({type(exc).__name__})",
            status=response.status_code,
            request_id=response.headers.get("request-id"),
        ) from exc
    return b"".join(pieces)


def _batch_path(batch_id: str) -> str:
    if not batch_id:
        raise ValueError("batch_id must not be empty")
    return f"{BATCHES_PATH}/{quote(batch_id, safe='')}"


def _body_factory(body: Body) -> tuple[Callable[[], Iterable[bytes]], bool]:
    """A factory for the body's chunks, and whether calling it twice gives the body twice."""
    if isinstance(body, bytes | bytearray):
        whole = bytes(body)
        return (lambda: (whole,)), True
    if isinstance(body, builtins.list | tuple):
        chunks = body
        return (lambda: chunks), True
    if callable(body):
        return body, True
    once = body
    return (lambda: once), False


def _length_checked(chunks: Iterable[bytes], expected: int) -> Iterator[bytes]:
    """Pass chunks through, raising BodyLengthError before the total can differ from `expected`.

    Raising from inside the request body makes httpcore drop the connection mid-body, so the API
    never sees a complete (wrong) request.
    """
    sent = 0
    for chunk in chunks:
        if not isinstance(chunk, bytes):
            if not isinstance(chunk, bytearray | memoryview):
                raise TypeError(f"batch body chunks must be bytes, not {type(chunk).__name__}")
            chunk = bytes(chunk)
        if not chunk:
            continue
        sent += len(chunk)
        if sent > expected:
            raise BodyLengthError(
                f"batch body is longer than its Content-Length {expected}",
                expected=expected,
                sent=sent,
            )
        yield chunk
    if sent != expected:
        raise BodyLengthError(
            f"batch body ended at {sent} bytes, short of its Content-Length {expected}",
            expected=expected,
            sent=sent,
        )


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed body; a body that breaks off gives what came."""
    pieces: builtins.list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            pieces.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass
    return b"".join(pieces)[:limit]
