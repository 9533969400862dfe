"""`pilot autolabel`'s settings: `AutolabelConfig`, from which the command line is built, with the settings of
each stage nested in it (proposals, tracks, features, clusters, templates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from validation import check_float, check_int, fail
from vlm_labeling.autolabel.clusters import ClusterConfig
from vlm_labeling.autolabel.features import FeatureWeights
from vlm_labeling.autolabel.proposals import ProposalConfig
from vlm_labeling.autolabel.templates import TemplateConfig
from vlm_labeling.autolabel.tracks import TrackConfig


@dataclass
class AutolabelConfig:
    """Detector labels for a game without ground truth: proposals, tracks, clusters named once, boxes."""

    data: Path | None = None  # an episode folder, or a folder searched for episodes; not with --review-only
    game: str = "arena"  # game profile name or YAML path: the closed class list and the HUD panels
    out: Path = Path("data/autolabel")  # work folder: stage outputs, clusters.json, montages, dataset/
    names: Path | None = None  # names file {"<cluster id>": "<class or ignore>"} (a person's decisions)
    vlm_url: str = ""  # OpenAI-compatible API root that names the clusters still unnamed ("" = no VLM)
    vlm_model: str = "qwen2.5vl:7b"  # model name as the server knows it
    api_key_env: str = "ORBIT_VLM_API_KEY"  # NAME of the env variable holding the API key (unset = no auth)
    vlm_timeout_s: float = 120.0  # s per socket operation of a VLM request
    vlm_min_confidence: float = 0.5  # VLM names less sure than this are not taken (the cluster stays unnamed)
    review: bool = True  # serve the review page while clusters are unnamed, and wait; --no-review for scripts
    review_only: bool = False  # only serve the review page of an existing --out (clusters, then the audit)
    review_port: int = 0  # port of the review page on 127.0.0.1; 0 = a free one
    unnamed: Literal["error", "ignore"] = "error"  # clusters nobody named: stop with an error, or ignore them
    stop_after: Literal["clusters", "labels"] = "labels"  # "clusters": stop once clusters.json is written
    every: int = 6  # frame step of the dataset's images (and of template matching)
    imgsz: int = 0  # px, long side of dataset images; 0 = the profile's detector.imgsz
    val_fraction: float = 0.2  # share of the episodes (whole episodes) in the dataset's validation split
    force: bool = False  # recompute every stage, even those finished with the same settings
    json: bool = False  # print the summary as JSON instead of a table
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    tracks: TrackConfig = field(default_factory=TrackConfig)
    features: FeatureWeights = field(default_factory=FeatureWeights)
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    templates: TemplateConfig = field(default_factory=TemplateConfig)

    def __post_init__(self) -> None:
        if self.data in (None, "") and not self.review_only:
            raise fail(self, "data", "an episode folder (--data DIR)", self.data)
        self.data = None if self.data in (None, "") else Path(self.data)
        self.out = Path(self.out)
        self.names = None if self.names in (None, "") else Path(self.names)
        check_int(self, "every", 1)
        check_int(self, "imgsz", 0)
        check_int(self, "review_port", 0, 65535)
        check_float(self, "val_fraction", 0.0, 1.0, low_open=True)
        check_float(self, "vlm_min_confidence", 0.0, 1.0)
        check_float(self, "vlm_timeout_s", 0.0, low_open=True)

    def client_config(self):
        """The VLM client's settings (vlm_labeling.client_config.ClientConfig)."""
        from vlm_labeling.client_config import ClientConfig

        return ClientConfig(
            base_url=self.vlm_url,
            model=self.vlm_model,
            api_key_env=self.api_key_env,
            timeout_s=self.vlm_timeout_s,
            max_concurrency=1,
        )
