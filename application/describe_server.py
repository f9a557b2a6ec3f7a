"""Use case: tell a caller which models it may use and under which limits."""

from __future__ import annotations

from collections.abc import Mapping

from application.ports import ModelCatalog, PolicySource
from domain.catalog import ModelDescription
from domain.policy import Limits
from domain.principal import CallContext
from domain.value import value_object


@value_object
class ServerDescription:
    server_name: str
    server_version: str
    models: tuple[ModelDescription, ...]
    default_model: str
    aliases: Mapping[str, str]
    limits: Limits


class DescribeServer:
    def __init__(self, catalog: ModelCatalog, policy: PolicySource) -> None:
        self._catalog = catalog
        self._policy = policy

    def __call__(self, context: CallContext) -> ServerDescription:
        catalog = self._catalog.current()
        policy = self._policy.current()
        principal = context.principal
        models = tuple(model for model in catalog.models if principal.may_use(model))
        visible = {model.model_id for model in models}
        return ServerDescription(
            server_name=policy.server_name,
            server_version=policy.server_version,
            models=models,
            # A default the caller may not use would only lead it into PERMISSION_DENIED.
            default_model=catalog.default_model if catalog.default_model in visible else "",
            aliases={
                alias: target for alias, target in catalog.aliases.items() if target in visible
            },
            limits=policy.limits,
        )
