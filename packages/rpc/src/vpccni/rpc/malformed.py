"""Requests whose bytes do not parse are the client's error: refused with INVALID_ARGUMENT and one log line.

grpcio deserializes a request before any servicer sees it; when the message's parser raises, grpcio logs
"Exception deserializing message!" with a traceback through its own logger and answers INTERNAL, as if the
server had failed. Any local client that can reach the socket could fill the daemon's log with tracebacks.
This interceptor gives every unary-request method a parser that cannot raise: a message that does not parse
reaches a guard in front of the servicer, which logs one line naming the method and refuses the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Malformed:
    """Stands in for a request that did not parse."""

    method: str
    reason: str


def _tolerant(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as err:  # DecodeError, or whatever else a message parser raises on garbage
            return Malformed(method=method, reason=f"{type(err).__name__}: {err}")

    return parse_or_mark


def _guarded(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def serve(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            log.warning("malformed %s request refused: %s", request.method, request.reason)
            # abort() raises; grpcio answers with this status and logs nothing.
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid message for {request.method}: {request.reason}",
            )
        return behaviour(request, context)

    return serve


class RefuseMalformedRequests(grpc.ServerInterceptor):  # type: ignore[misc]
    """`grpc.server(..., interceptors=[RefuseMalformedRequests()])`."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method: the wrapping is done once

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = str(handler_call_details.method)
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler  # unknown method (grpcio answers UNIMPLEMENTED), or nothing to guard
        parse = _tolerant(handler.request_deserializer, method)
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                _guarded(handler.unary_unary),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                _guarded(handler.unary_stream),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._wrapped[method] = wrapped
        return wrapped
