"""tutorlib: the support library of the dialogue-summarization fine-tuning course.

Modules (import the one you need; nothing heavy is imported here):
profile, paths, tiny, data, templates, memory, train, generate, grading, metrics, results, plots.
"""

__version__ = "0.1.0"
