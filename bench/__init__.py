"""Benchmarks and probes, kept out of the installed package (as llm.c keeps dev/ apart from llmc/).

    runtime_vs_hf.py   `inloop bench runtime`: ours vs HF transformers, medians and the ratio
    cuda/              the CUDA backend's benchmark, random models of the real shapes, probes
                       (scripts/gpu_check.py, gpu_profile.py and gpu_baseline.py run them)

They import the services as `inloop.services...` and run from a checkout (an editable
install, or scripts/import_tree.py where pip cannot run).
"""
