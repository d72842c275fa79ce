"""Datasets: bundled, generated, and read from standard on-disk formats.

Nothing is downloaded at run time. Every dataset is registered by name (:data:`DATASETS`) and
loaded with :func:`load_dataset`, which returns a :class:`Dataset` of ready tensors:

==================  ======  ===========  ==========================================================
name                kind    source       what is read or made
==================  ======  ===========  ==========================================================
digits              vector  bundled      scikit-learn ``load_digits`` (8x8 -> 64 features), cached
mnist1d             vector  generated    the ``mnist1d`` package's generator (40 features), cached
synthetic           vector  generated    scikit-learn ``make_classification``, cached
synthetic-tokens    tokens  generated    random tokens with one class "motif" planted per sequence
mnist               image   directory    IDX files ``train-images-idx3-ubyte`` ... (optionally .gz)
fashion-mnist       image   directory    the same IDX file names as MNIST
cifar10             image   directory    ``cifar-10-batches-py`` (python pickles, read safely)
cifar100            image   directory    ``cifar-100-python`` (python pickles, read safely)
svhn                image   directory    ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5)
csv                 vector  file         a CSV table with a ``target`` column (e.g. UCI Adult)
==================  ======  ===========  ==========================================================

Splits. Datasets with an official test split (mnist1d, MNIST, Fashion-MNIST, CIFAR, SVHN) keep
it; the others (digits, synthetic, synthetic-tokens, csv) carve a test split of
``test_fraction`` from all samples first. The validation split (``val_fraction``) is then
carved from the training samples. Both carvings are seeded by ``seed`` and stratified whenever
every class has at least 2 samples and each part can hold one sample per class. Generated
datasets are made from their own ``data_seed`` option, so that ``seed`` changes the split and
never the problem.

``max_samples`` caps the training pool (official train split, or what remains after carving
the test split) with a seeded, stratified subsample *before* the validation split; the test
split is capped in the same proportion (rounded up) so that quick runs stay quick.
``info["pool_size"]`` and ``info["test_size_uncapped"]`` record the sizes before capping.

Preprocessing is fitted on the train part only and applied unchanged to val and test:
vector features are standardized per feature, images are scaled to [0, 1] and standardized
per channel (a zero std is replaced by 1), tokens are left as int64 ids. The statistics are
kept in ``info["standardization"]``. CSV tables: whitespace is stripped from every field;
numeric columns are imputed with the train mean and standardized; other columns are one-hot
encoded with the categories seen in train (unseen ones map to all zeros; missing values are
their own ``<missing>`` category); the target's sorted unique values become classes 0..C-1
(``info["classes"]``), and rows without a target are dropped with a warning.

Options (``options=``; anything else is an error): mnist1d ``num_samples``, ``data_seed``;
synthetic ``n_samples``, ``n_features``, ``n_informative``, ``n_redundant``, ``n_classes``,
``n_clusters_per_class``, ``class_sep``, ``flip_y``, ``data_seed``; synthetic-tokens
``n_samples``, ``seq_len``, ``vocab_size``, ``n_classes``, ``motif_len``, ``data_seed``;
cifar100 ``label_mode`` (fine | coarse); svhn ``extra`` (add ``extra_32x32.mat`` to train);
csv ``delimiter``, ``columns`` (names for a file without a header row), ``missing_values``.

The mnist1d, digits and synthetic arrays are cached in ``$MIDL_AUTOK_CACHE`` (default
``$XDG_CACHE_HOME/midl_autok`` or ``~/.cache/midl_autok``; ``data/_cache.py``), keyed by the
options and the generator's version, so later processes (a search's trials, Ray workers) read
them back without importing scikit-learn (~1.5 s each). CIFAR pickles are read with an
unpickler that only rebuilds numpy arrays; any other global in the file is refused.
"""

from __future__ import annotations

from midl_autok.data.dataset import Dataset
from midl_autok.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
