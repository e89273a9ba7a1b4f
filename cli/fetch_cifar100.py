"""`datakit fetch-cifar100`: download (or take), verify and safely extract the CIFAR-100 binary version."""

from __future__ import annotations

from datakit_cli import fetch_cifar

NAME = "fetch-cifar100"
HELP = "download, verify and safely extract the CIFAR-100 binary version (resumes, idempotent)"
DESCRIPTION = fetch_cifar.description("cifar100")


def add_arguments(p):
    fetch_cifar.add_arguments(p, "cifar100")


def run(args) -> dict:
    return fetch_cifar.run(args, "cifar100")


def render(result: dict) -> str:
    return fetch_cifar.render(result)
