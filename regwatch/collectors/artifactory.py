"""The ``artifactory`` collectors (kind: artifactory targets): see docs/nexus-artifactory.md."""
