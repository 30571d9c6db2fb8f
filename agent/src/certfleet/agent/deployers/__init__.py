"""Deployers: one module per target kind."""

from .base import Bundle, DeployError, DeployOutcome
from .file import FileDeployer

__all__ = ["Bundle", "DeployError", "DeployOutcome", "FileDeployer"]
