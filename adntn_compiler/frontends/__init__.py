"""Frontends: what becomes IR. `trace` (a generator's weight and layer programs) and `torch_modules` (a torch
model walked module by module into load and call graphs); torch.export and torch.compile frontends join here."""
