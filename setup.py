from setuptools import find_packages, setup

setup(
    name="duodecode",
    version="0.1.0",
    description="Autoregressive and mask-predict text decoding on Triton kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["engine", "engine.*", "kernels", "kernels.*", "benchmarks", "benchmarks.*"]),
    package_data={"benchmarks": ["assets/**/*"]},
    install_requires=[
        "torch>=2.5",  # scaled_dot_product_attention(enable_gqa=...)
        "triton>=3.2",
        "transformers>=4.45",
        "safetensors",
        "tokenizers",
        "numba",
        "numpy",
        "tqdm",
        "matplotlib",
        "fastapi",  # the OpenAI-compatible server (python -m engine serve)
        "uvicorn",
        "prometheus-client",  # its /metrics
        "httpx",  # the serving benchmark's client
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "ruff", "openai"],
        "bench": ["pytest-benchmark"],
    },
)
