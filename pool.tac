# The same pool as `twistd -n nomp -c conf/`, for `twistd -ny pool.tac`.
from twisted.application.service import Application

from nomp.tap import Options, makeService

options = Options()
options.parseOptions(["-c", "conf"])
application = Application("nomp")
makeService(options).setServiceParent(application)
