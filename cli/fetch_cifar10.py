"""`datakit fetch-cifar10`: download (or take), verify and safely extract the CIFAR-10 binary version."""

from __future__ import annotations

from datakit_cli import fetch_cifar

NAME = "fetch-cifar10"
HELP = "download, verify and safely extract the CIFAR-10 binary version (resumes, idempotent)"
DESCRIPTION = fetch_cifar.description("cifar10")


def add_arguments(p):
    fetch_cifar.add_arguments(p, "cifar10")


def run(args) -> dict:
    return fetch_cifar.run(args, "cifar10")


def render(result: dict) -> str:
    return fetch_cifar.render(result)
