"""Kubernetes RBAC, deny by default, as the API server's authorizer evaluates it.

The fake API server loads the Roles, ClusterRoles and their bindings that ``kubectl
kustomize deploy/overlays/<mode>`` renders, so a request the shipped Role does not allow is
refused with the real 403, and a test that passes proves the shipped RBAC is enough for what
it exercised. Nothing is allowed that no rule allows.

Matching follows the authorizer (``k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac``):

* a rule's ``apiGroups`` holds the request's group or ``*``;
* its ``resources`` holds the resource (``deployments``), or for a subresource the pair
  (``deployments/scale``), ``*``, or ``*/scale``; ``deployments`` alone does not cover
  ``deployments/scale``;
* its ``verbs`` holds the verb (``get``, ``list``, ``create``, ``update``, ``patch``,
  ``delete``) or ``*``; a dry-run request is authorised like the real one;
* ``resourceNames``, when present, holds the object's name; a request without a name
  (``create``, ``list``) never matches such a rule.

A RoleBinding grants its Role (or a ClusterRole) in its own namespace; a ClusterRoleBinding
grants a ClusterRole everywhere. Subjects are users, groups and service accounts
(``system:serviceaccount:NS:NAME``, in the groups ``system:serviceaccounts``,
``system:serviceaccounts:NS`` and ``system:authenticated``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """The authorisation attributes of one request."""

    user: str
    verb: str
    group: str  # "" for the core group
    resource: str  # "deployments"
    subresource: str  # "scale" or ""
    namespace: str
    name: str  # "" when the request names no object

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Grant:
    """One rule as bound to a subject: where it applies and which Role it came from."""

    namespace: str | None  # None: every namespace (a ClusterRoleBinding)
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...]
    role: str  # "Role llm/aiops-target", for messages

    def allows(self, req: Request) -> bool:
        if self.namespace is not None and self.namespace != req.namespace:
            return False
        if "*" not in self.groups and req.group not in self.groups:
            return False
        if not any(_resource_matches(r, req) for r in self.resources):
            return False
        if "*" not in self.verbs and req.verb not in self.verbs:
            return False
        return not self.names or (req.name != "" and req.name in self.names)


def _resource_matches(rule: str, req: Request) -> bool:
    if rule in ("*", req.full_resource):
        return True
    return bool(req.subresource) and rule == f"*/{req.subresource}"


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def user_groups(user: str) -> tuple[str, ...]:
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return ("system:serviceaccounts", f"system:serviceaccounts:{parts[2]}",
                "system:authenticated")
    return ("system:authenticated",)


def _subject_user(subject: Mapping[str, Any], binding_ns: str) -> tuple[str, str]:
    """(kind, name) of a binding's subject, service accounts as their user names."""
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return "User", service_account_user(subject.get("namespace") or binding_ns,
                                             subject["name"])
    return str(kind), str(subject["name"])


class Rbac:
    """The rules bound to each user and group; :meth:`authorize` answers one request."""

    def __init__(self, grants: Mapping[tuple[str, str], list[Grant]] | None = None) -> None:
        self._grants: dict[tuple[str, str], list[Grant]] = {
            k: list(v) for k, v in (grants or {}).items()}

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> Rbac:
        """Roles, ClusterRoles and their bindings among ``objects``; the rest is ignored.

        A binding whose role is missing grants nothing, as on a real cluster."""
        objs = list(objects)
        roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                 for o in objs if o.get("kind") in ("Role", "ClusterRole")}
        grants: dict[tuple[str, str], list[Grant]] = {}
        for b in objs:
            if b.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            ns = b["metadata"].get("namespace", "") if b["kind"] == "RoleBinding" else ""
            ref = b["roleRef"]
            role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"]))
            if role is None:
                continue
            where = ns if b["kind"] == "RoleBinding" else None
            label = f"{ref['kind']} {ns + '/' if ref['kind'] == 'Role' else ''}{ref['name']}"
            rules = [Grant(where, tuple(r.get("apiGroups") or ()), tuple(r.get("resources") or ()),
                           tuple(r.get("verbs") or ()), tuple(r.get("resourceNames") or ()),
                           label)
                     for r in role.get("rules") or []]
            for subject in b.get("subjects") or []:
                grants.setdefault(_subject_user(subject, ns), []).extend(rules)
        return cls(grants)

    @classmethod
    def allow_all(cls, user: str) -> Rbac:
        """``cluster-admin`` for ``user``: for tests of the server itself, not of aiops."""
        return cls({("User", user): [Grant(None, ("*",), ("*",), ("*",), (), "cluster-admin")]})

    def grants(self, user: str) -> list[Grant]:
        out = list(self._grants.get(("User", user), []))
        for group in user_groups(user):
            out += self._grants.get(("Group", group), [])
        return out

    def authorize(self, req: Request) -> Grant | None:
        """The first rule that allows ``req``, or None (denied)."""
        for grant in self.grants(req.user):
            if grant.allows(req):
                return grant
        return None


__all__ = ["Grant", "Rbac", "Request", "service_account_user", "user_groups"]
