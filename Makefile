# The two commands a new user needs (see README.md), each setting itself up first:
#   make demo   train a RetinaNet-style detector with the plugin on generated data
#   make test   run the whole test suite
PYTHON := .venv/bin/python
DEMO_CONFIG ?= configs/retinanet/retinanet_r18-tiny_fpn_2k_synthetic.py

.PHONY: setup demo test benchmark cuda-check clean

setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/train.py $(DEMO_CONFIG) --work-dir work_dirs/demo

test: setup
	$(PYTHON) -m pytest tests

benchmark: setup
	$(PYTHON) tools/benchmark_focal_loss.py

cuda-check:
	bash tools/rehearse_gpu_check.sh

clean:
	rm -rf build focal_plugin/_C*.so *.egg-info work_dirs
