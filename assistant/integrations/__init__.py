"""Ways in from other libraries. Each module imports its library itself, and only when it is imported:
``assistant.integrations.langchain`` needs the ``langchain`` extra (``pip install 'assistant[langchain]'``)."""
