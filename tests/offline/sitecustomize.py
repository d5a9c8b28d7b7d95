"""Put this folder first on PYTHONPATH of a child process started by the tests: its sockets are guarded too."""
import offline_guard

offline_guard.install()
