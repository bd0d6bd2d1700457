"""The search: the ask/tell loop over an Optuna study (runner), where trials run (executors, worker), and the results
folder (store). The public entry point is :func:`attnsearch.search.runner.run_search`, also ``attnsearch.run_search``.
"""
