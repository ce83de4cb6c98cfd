"""nomp-notify: a coin daemon's ``-blocknotify`` as a small C program
(nomp_notify.c), compiled by ``build.py`` when scripts/setup.sh installs nomp."""
