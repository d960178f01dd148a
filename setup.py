from setuptools import find_packages, setup

setup(
    name="verl-resrl",
    version="0.1.0",
    description="ResRL (negative-sample projection residual RL) as a plug-in for veRL",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["verl_resrl", "verl_resrl.*"]),
    package_data={"verl_resrl.demo": ["*.yaml"]},
    install_requires=[
        "verl[verl-core]>=0.9.1,<0.10",
        "torch",
        "ray",
        "omegaconf",
        "math-verify",
        "pandas",
        "pyarrow",
    ],
    extras_require={
        # What veRL 0.9.1 pins for its own `vllm` extra, plus flash-attn for the FSDP actor.
        "gpu": ["verl[vllm]>=0.9.1,<0.10", "vllm==0.24.0", "flash-attn"],
        "test": ["pytest", "tokenizers", "transformers", "matplotlib"],
    },
    entry_points={"verl.plugins": ["resrl = verl_resrl.plugin"]},
)
