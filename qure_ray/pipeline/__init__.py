"""The Ray side: catalog, queue and job manager actors (Serve deployments) and the workflow's tasks."""
