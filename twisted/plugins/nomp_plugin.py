"""twistd plugin: ``twistd -n nomp -c conf/``. Kept lazy: nomp is imported
only when twistd runs it. This folder has no __init__.py, on purpose."""

from twisted.application.service import ServiceMaker

nomp = ServiceMaker("nomp", "nomp.tap", "A cryptocurrency mining pool server.", "nomp")
