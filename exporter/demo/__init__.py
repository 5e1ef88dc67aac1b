"""The demo: the DialNexa API simulator and the throwaway Prometheus and Alertmanager."""
