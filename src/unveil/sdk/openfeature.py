"""The OpenFeature provider: unveil's local evaluation behind the openfeature-sdk API.

    from openfeature import api
    from unveil import Client
    from unveil.openfeature import UnveilProvider

    api.set_provider(UnveilProvider(Client(url, sdk_key)))
    api.get_client().get_boolean_details("new-checkout", False, EvaluationContext("user-1"))

The targeting key becomes the context's ``key``; the other attributes keep
their names. Every resolution kind is served (boolean, string, integer,
float, object) with OpenFeature's reasons, variants and error codes, and the
flag's kind and the snapshot's revision as flag metadata. The provider
emits ready once the client has the server's flags, configuration changed
when they change, and stale when the client serves flags it could not
refresh.

Needs the ``openfeature-sdk`` package (``pip install unveil[openfeature]``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OpenFeatureErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from unveil.core import Evaluation
from unveil.core import Reason as UnveilReason
from unveil.sdk.client import Client

__all__ = ["UnveilProvider"]

# unveil's reasons that OpenFeature lacks go by the nearest, named in metadata
_REASONS = {UnveilReason.PREREQUISITE_FAILED: Reason.DISABLED}


def context_of(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """An OpenFeature evaluation context as an unveil context."""
    if evaluation_context is None:
        return {}
    context = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key is not None:
        context["key"] = evaluation_context.targeting_key
    return context


class UnveilProvider(AbstractProvider):
    """Resolves flags with an ``unveil.Client``, locally."""

    def __init__(self, client: Client, ready_timeout: float = 10.0) -> None:
        self.client = client
        self._ready_timeout = ready_timeout
        self._was_stale = False
        self._lock = threading.Lock()
        _providers.add(self)
        client.on_change(self._flags_changed)
        client.on_status(self._status_changed)

    def get_metadata(self) -> Metadata:
        return Metadata(name="unveil")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Wait (bounded) for the server's flags; say stale if only cached ones came."""
        if self.client.wait_until_ready(self._ready_timeout):
            return
        if self.client.origin != "none":
            self._was_stale = True
            self.emit_provider_stale(ProviderEventDetails(message="serving cached flags"))
            return
        from openfeature.exception import ProviderNotReadyError

        raise ProviderNotReadyError("no flags yet: the server is unreachable and nothing is cached")

    def shutdown(self) -> None:
        self.client.close()

    def _status_changed(self, status: str, problem: str | None) -> None:
        with self._lock:
            if problem is not None or status == "refused":
                message = problem or self.client.problem or "the server refuses the SDK key"
                self.emit_provider_error(ProviderEventDetails(message=message))
            elif status == "stale" and not self._was_stale:
                self._was_stale = True
                self.emit_provider_stale(ProviderEventDetails(message="the server is unreachable"))
            elif status == "ready" and self._was_stale:
                self._was_stale = False
                self.emit_provider_ready(ProviderEventDetails(message="live again"))

    def _flags_changed(self, keys: set[str]) -> None:
        self.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=sorted(keys)))

    # -- resolution --------------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, object)

    def _resolve(
        self,
        flag_key: str,
        default_value: Any,
        evaluation_context: EvaluationContext | None,
        wanted: type,
    ) -> FlagResolutionDetails[Any]:
        result = self.client.evaluate(flag_key, context_of(evaluation_context))
        if result.error_code is not None:
            if self.client.origin == "none" and self.client.status != "ready":
                return _error(
                    default_value,
                    "PROVIDER_NOT_READY",
                    "no flags yet: the server is unreachable and nothing is cached",
                )
            return _error(default_value, result.error_code.value, result.error_message)
        value = result.value
        if value is None:
            return _error(
                default_value,
                "TYPE_MISMATCH",
                f"flag '{flag_key}' gives null (variant '{result.variant}'), "
                "which OpenFeature cannot carry as a value",
            )
        if not _fits(value, wanted):
            kind = type(value).__name__
            return _error(
                default_value,
                "TYPE_MISMATCH",
                f"flag '{flag_key}' gives {kind}, not {wanted.__name__}",
            )
        if wanted is float:
            value = float(value)
        reason = _REASONS.get(result.reason, Reason(result.reason.value))
        if self.client.status == "stale" and reason is not Reason.ERROR:
            reason = Reason.STALE
        return FlagResolutionDetails(
            value=value,
            reason=reason,
            variant=result.variant,
            flag_metadata=self._metadata(flag_key, result),
        )

    def _metadata(self, flag_key: str, result: Evaluation) -> dict[str, Any]:
        flag = self.client.ruleset.document.flags.get(flag_key)
        metadata: dict[str, Any] = {}
        if flag is not None:
            metadata["kind"] = flag.kind.value
            if flag.description:
                metadata["description"] = flag.description
        if self.client.revision is not None:
            metadata["revision"] = self.client.revision
        if result.reason in _REASONS:
            metadata["unveilReason"] = result.reason.value
        return metadata


def _fits(value: Any, wanted: type) -> bool:
    if wanted is bool:
        return isinstance(value, bool)
    if wanted is str:
        return isinstance(value, str)
    if wanted is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, Mapping | list)


def _error(default: Any, code: str, message: str | None) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=default,
        reason=Reason.ERROR,
        error_code=OpenFeatureErrorCode(code),
        error_message=message,
    )


# Every provider, so that a forked child gets new locks (a parent thread may hold one).
_providers: weakref.WeakSet[UnveilProvider] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    for provider in list(_providers):
        provider._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_locks_in_child)
