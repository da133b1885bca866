"""C++ and CUDA sources of latentforge.ops; a package only so that they install (and are found) as package data."""
