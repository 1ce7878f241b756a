"""Blob storage: bytes under opaque keys, written whole or not at all.

``Blobs`` is what the parts use (uploaded files, agent backups, and what an agent's deletion
lets go of); ``LocalDisk`` keeps them under a directory of this node, 0700, each file 0600.
"""

from kai.storage.blobs import Blobs, BlobWriter, LocalDisk

__all__ = ["BlobWriter", "Blobs", "LocalDisk"]
