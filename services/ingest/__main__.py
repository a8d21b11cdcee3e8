"""python -m services.ingest"""

from services.ingest.main import main

if __name__ == "__main__":
    main()
