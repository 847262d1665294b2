"""The default configuration files, shipped with the package: `configs/` is the folder users edit;
an installed copy is read (``common.config.shipped_path``) when a relative ``configs/...`` path does
not exist under the working directory."""
