"""The console keys an operator's role may use: each key that changes something names the
operator API method it calls, and that method's role (``@requires``) decides. A key the role
does not allow is greyed out in the footer, and pressing it says why in one line, the line the
server would refuse it with."""

from __future__ import annotations

from typing import Any

from velotui.server.roles import allows, required_role
from velotui.server.service import Service

# A screen's action name: the method it calls.
ACTION_METHODS = {
    "new_hunt": "create_hunt",
    "copy_hunt": "create_hunt",
    "start_hunt": "start_hunt",
    "pause_hunt": "pause_hunt",
    "stop_hunt": "stop_hunt",
    "edit_hunt": "set_hunt",
    "relaunch_hunt": "relaunch_hunt",
    "export_hunt": "export_hunt",
    "archive_hunt": "archive_hunt",
    "delete_hunt": "delete_hunt",
    "add_label": "label_client",
    "remove_label": "label_client",
    "collect": "schedule_collection",
    "again": "schedule_collection",
    "cancel_collection": "cancel_flow",
    "run_query": "query_hunt",
    "edit_query": "query_hunt",
}


def key_refusal(operator: dict[str, Any] | None, action: str) -> str | None:
    """Why ``operator`` (``{"name", "role"}`` as server_info gives it; None: not known yet)
    may not use the key for ``action``, in one line; None when it may."""
    method = ACTION_METHODS.get(action)
    if method is None or operator is None:
        return None
    needed = required_role(getattr(Service, method))
    role = str(operator.get("role", ""))
    if needed is None or allows(role, needed):
        return None
    return f"{method} needs the {needed} role; {operator.get('name')} is {role}"


def role_refuses(node: Any, action: str) -> bool:
    """Whether the console's operator may not use the key for ``action`` (for a screen's
    ``check_action``, which then greys the key out: None)."""
    refusal = getattr(node.app, "key_refusal", None)
    return refusal is not None and refusal(action) is not None
