"""What runs a search's trials: ``local`` (in-process) or ``nni`` (NNI's manager and trial
processes, with ``nni_tuner`` inside NNI's dispatcher). ``seglib.hpo.search`` picks one by
the ``engine`` setting."""
