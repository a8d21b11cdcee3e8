"""python -m docpipe_cli"""

from docpipe_cli.commands import main

if __name__ == "__main__":
    main()
