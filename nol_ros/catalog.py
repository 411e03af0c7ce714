"""The objects a node knows by name (parameters ``objects.names`` / ``objects.mesh_paths``)."""

from __future__ import annotations

from dataclasses import dataclass

from nol_ros.errors import ConfigError, InputError


class UnknownObjectError(InputError):
    """An object was named that the node does not know and no mesh was given."""

    code = "UNKNOWN_OBJECT"


@dataclass(frozen=True)
class ObjectCatalogConfig:
    """Known objects: ``names[i]`` has the mesh ``mesh_paths[i]`` (PLY/OBJ, metres)."""

    names: tuple[str, ...] = ()
    mesh_paths: tuple[str, ...] = ()

    def __post_init__(self):
        if len(self.names) != len(self.mesh_paths):
            raise ConfigError(f"objects.names has {len(self.names)} entries but "
                              f"objects.mesh_paths {len(self.mesh_paths)}; give one mesh per name")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"objects.names {list(self.names)} repeats a name")

    def mesh_for(self, name: str, mesh_path: str = "") -> str:
        """The mesh to use for ``name``: ``mesh_path`` when given, else the catalogue's."""
        if mesh_path:
            return mesh_path
        if name in self.names:
            return self.mesh_paths[self.names.index(name)]
        known = ", ".join(self.names) if self.names else "none configured"
        raise UnknownObjectError(f"object '{name}' is unknown (known: {known}) and no mesh_path "
                                 "was given; pass the mesh or add it to the objects.names / "
                                 "objects.mesh_paths parameters")
