"""Detection methods behind one small interface.

Each method module provides ``build_net(config) -> nn.Module`` whose ``forward(x, with_maps)``
maps a preprocessed batch to ``(raw scores [N], anomaly maps [N, H, W] or None)``; maps cost
time, so they are made only ``with_maps``. ``AnomalyModel``
adds what every method shares: preprocessing, calibration and the model file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomalycli import modelfile
from anomalycli.data.levels import stretched
from anomalycli.detection import backbones, ignore
from anomalycli.detection.methods import classifier, hybrid, patchcore
from anomalycli.errors import UserError
from anomalycli.judgement.calibration import Calibration

METHODS = {"classifier": classifier.build_net, "patchcore": patchcore.build_net, "hybrid": hybrid.build_net}


@dataclass
class AnomalyModel:
    method: str
    net: nn.Module
    config: dict  # backbone, image_size, normal_class, class_names and the method's own settings
    calibration: Calibration
    # The scoring graph the file carried, where it was exported from these tensors (export.stored_graph):
    # its bytes ("graph"), "probe_tensor" and "probe_raw_score". Scoring with it is engines.on_engine's choice.
    stored: dict | None = field(default=None, repr=False)

    @property
    def has_maps(self) -> bool:
        return self.method != "classifier"

    @torch.no_grad()
    def score(self, images: torch.Tensor | np.ndarray, with_maps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 N x 3 x S x S (a tensor, or a numpy array as ``scoring`` gives) -> raw scores [N] and maps [N, S, S] (or None)."""
        self.net.eval()
        device = next(self.net.parameters(), torch.empty(0)).device
        keep = ignore.keep_of(self.config)
        pixels = backbones.preprocess(torch.as_tensor(images).to(device), self.config["backbone"], keep, stretched(self.config))
        return self.net(pixels, with_maps)

    def save(self, path: str | Path, overwrite: bool = True, scoring_graph: tuple[torch.Tensor, dict] | None = None) -> Path:
        """The model file, with ``scoring_graph`` (its bytes and their check, ``export.stored_graph``)
        where given: ``export.save_model`` saves an int8 model so."""
        tensors = self.net.state_dict()
        meta = {"method": self.method, "config": self.config, "calibration": self.calibration.to_dict()}
        if scoring_graph is not None:
            graph, meta[modelfile.GRAPH_KEY] = scoring_graph
            tensors = {**tensors, modelfile.GRAPH_TENSOR: graph}
        return modelfile.save(path, tensors, meta, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> "AnomalyModel":
        tensors, meta = modelfile.load(path)
        graph = tensors.pop(modelfile.GRAPH_TENSOR, None)
        method = meta.get("method")
        if method not in METHODS:
            raise UserError(f"{path} is a model of method {method!r}, which this anomalycli does not know ({', '.join(METHODS)})")
        try:
            net = METHODS[method](meta["config"])
            wrong = mismatched_parts(net.state_dict(), tensors)
            if not wrong:
                net.load_state_dict(tensors, strict=True)
            calibration = Calibration(**meta["calibration"])
        except KeyError as exc:
            wrong = f"no {exc.args[0]!r} in its metadata"
        except (TypeError, RuntimeError, ValueError) as exc:
            wrong = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if wrong:
            raise UserError(f"{path} is an anomalycli {method} model with missing or mismatched parts ({wrong}); retrain it")
        check, stored = meta.get(modelfile.GRAPH_KEY), None
        if graph is not None:
            graph = graph.numpy().tobytes()
            if modelfile.carried_graph_holds(check, modelfile.digest(tensors), graph):
                stored = {**check, "graph": graph}
        return cls(method, net.eval(), meta["config"], calibration, stored)


def mismatched_parts(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], shown: int = 3) -> str:
    """What keeps ``found`` tensors from loading where ``expected`` ones belong, in words naming
    them ("missing pixel_head.weight, ..."), or "" where they match: the file's refusal says it."""

    def named(what: str, names: list[str]) -> str:
        return f"{what} {', '.join(names[:shown])}" + (f" and {len(names) - shown} more" if len(names) > shown else "") if names else ""

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape))
    return "; ".join(filter(None, [named("missing", missing), named("unexpected", unexpected), named("wrong shape", reshaped)]))
