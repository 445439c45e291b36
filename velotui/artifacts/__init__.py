"""Artifacts: named, parameterised collections in Velociraptor's YAML format, the built-in
library, and compiling an artifact and everything it calls into one VQL text for agents."""

from velotui.artifacts.compiler import (
    SOURCE_COLUMN,
    ArtifactRequest,
    Collection,
    CompileError,
    compile_collection,
    requests_from_parameters,
)
from velotui.artifacts.definition import Artifact, ArtifactError, Parameter, Source, load_artifact
from velotui.artifacts.library import Library, UnknownArtifact
from velotui.artifacts.parameters import ParameterError

__all__ = [
    "SOURCE_COLUMN",
    "Artifact",
    "ArtifactError",
    "ArtifactRequest",
    "Collection",
    "CompileError",
    "Library",
    "Parameter",
    "ParameterError",
    "Source",
    "UnknownArtifact",
    "compile_collection",
    "load_artifact",
    "requests_from_parameters",
]
